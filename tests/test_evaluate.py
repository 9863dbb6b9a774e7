"""Format scorers on known outputs."""

import json

from sft_space.demo_data.make_demo_data import JSON_EXTRACT_SCHEMA
from sft_space.evaluate import parse_json_object, schema_errors, score_json_replies

GOOD = json.dumps({"intent": "book_table", "name": "Sam", "date": "2025-03-14", "time": "19:30", "quantity": 2, "item": None})


def test_schema_errors_name_the_problem():
    assert schema_errors(json.loads(GOOD), JSON_EXTRACT_SCHEMA) == []
    bad = {**json.loads(GOOD), "time": "7:30pm", "intent": "dance", "extra": 1}
    problems = " ".join(schema_errors(bad, JSON_EXTRACT_SCHEMA))
    assert "'time' does not match" in problems and "'intent' not one of" in problems and "unexpected 'extra'" in problems
    assert schema_errors(None, JSON_EXTRACT_SCHEMA) == ["not a JSON object"]
    twice = GOOD[:-1] + ', "date": "2025-03-14"}'
    assert "a key appears twice" in schema_errors(parse_json_object(twice), JSON_EXTRACT_SCHEMA)


def test_scores_count_valid_schema_and_fields():
    wrong_time = GOOD.replace("19:30", "20:30")
    scores = score_json_replies([GOOD, wrong_time, "Sure! Here is your booking.", '{"intent": "book_table"}'],
                                [GOOD] * 4, JSON_EXTRACT_SCHEMA)
    assert scores["valid_json"] == 0.75
    assert scores["schema_valid"] == 0.5
    assert scores["all_fields_exact"] == 0.25
    assert scores["field_accuracy"] == (6 + 5 + 0 + 1) / 24
    assert len(scores["failures"]) == 3
