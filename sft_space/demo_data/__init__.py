"""The demo sets' files and what writes them (make_demo_data.py, byte for byte). Imports nothing of sft_space but
its own modules; models/bundled.py says where the files are, data/ reads them."""
