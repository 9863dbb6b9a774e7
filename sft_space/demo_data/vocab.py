"""Open vocabularies for the json-extract generator (json_extract.py): names from many cultures and scripts,
made-up names built from syllables, hundreds of products built from parts, shops and staff.

The lists are long on purpose: a model trained on a short list learns to recognise its words instead of copying
what the message says. Made-up names and brands come from `syllable_word`, so no list can be learnt by heart.
"""

from __future__ import annotations

import random

FIRST_NAMES = """
Priya Tom Aisha Lukas Mei Carlos Fatima Jonas Sofia Kwame Elena Ravi Hannah Omar Yuki Grace Mateo Ingrid Daniel
Amara Leo Nadia Samuel Chloe Tariq Freya Diego Zara Henrik Lina Keanu Niamh Siobhan Aoife Ciaran Oisin Padraig
Chidi Ngozi Oluwaseun Adebayo Chiamaka Emeka Folake Yaw Akosua Kofi Abena Kwabena Nana Efua Thandiwe Sipho
Lindiwe Themba Zanele Wanjiru Kamau Achieng Otieno Baraka Amani Zuri Makena Nguyen Linh Minh Thu Huong Bao Tuan
Anh Duc Hoa Agnieszka Krzysztof Małgorzata Wojciech Katarzyna Piotr Zofia Bartosz Youssef Layla Hamza Mariam
Khalid Salma Rania Karim Noor Yasmin Ibrahim Hind Bilal Ananya Arjun Deepika Vikram Kavya Rohan Meera Sanjay Lakshmi
Aditya Divya Karthik Haruto Sakura Ren Aiko Takeshi Hina Sota Emi Kenji Yui Thiago Beatriz Gabriel Larissa Rafael
Camila Joao Luana Felipe Mariana Aroha Tane Manaia Wiremu Anahera Nikau Mere Aki Eeva Juhani Aino Mikko Sanna
Onni Veera Elif Emre Zeynep Burak Ayşe Mehmet Selin Kerem Deniz Olu Tunde Bisi Kemi Seun Dayo Mihai Ioana Radu
Bogdan Dorota Miklós Zsófia Bence Réka Ádám Eszter Jin Seo-yeon Min-jun Ji-woo Hyun Soo-ah Tae-yang Ha-eun Ximena
Alejandro Guadalupe Itzel Santiago Valentina Joaquín Renata Sione Malia Tavita Losa Iosefa Leilani Kalani Makoa
Ikaika Søren Astrid Bjørn Sigrid Magnus Liv Zoë José Chloé Renée François Inès Mathéo Élodie Gaëlle Jürgen Jörg
Müller Ana Ivo Marta Nikola Dragana Milena Luka Goran Vesna Fionn Seren Rhys Eilidh Morag Callum Isla Hamish Ewan
Esther Ruth Miriam Eli Noa Yael Avi Tamar Ofir Lior Dmitri Olga Svetlana Igor Natasha Pavel Irina Sergei Anya
Bogusia Kasia Tomasz Weronika Jakub Oksana Taras Halyna Bohdan Mykola Marek Jana Petra Lenka Ondřej Alžběta
Farhan Nusrat Rahim Tasnim Arif Shirin Dariush Parisa Kian Roya Babak Leyla Anouk Sem Jesse Fenna Bram Maud Thijs
Lotte Giulia Matteo Chiara Lorenzo Francesca Alessandro Federica Nico Ilse Wouter Brigid Declan Rowan Sage Quinn
Harper Wren Jude Otis Ivy Hazel Ezra Maeve Cormac Tadhg Saoirse Caoimhe Rónán Dara Eamon Pita Aperahama Hemi
""".split()

LAST_NAMES = """
Patel Becker Okafor Nguyen Garcia Khan Larsen Rossi Mensah Kowalski Silva Tanaka Murphy Haddad Novak Dubois Costa
Schmidt Ali Evans O'Sullivan Ní_Bhriain McCarthy Fitzgerald Adeyemi Okonkwo Eze Nwosu Boateng Asante Owusu Agyeman
Dlamini Nkosi Mwangi Odhiambo Kimani Tran Pham Le Hoang Vu Nowak Wiśniewski Wójcik Kamińska Lewandowski Al-Sayed
Mansour Haddadi Nasser Farouk Rahman Sharma Iyer Reddy Krishnan Nair Banerjee Gupta Sato Suzuki Takahashi Watanabe
Yamamoto Kobayashi Oliveira Santos Pereira Ferreira Almeida Carvalho Ngata Parata Te_Rangi Walker Henare Virtanen
Korhonen Mäkinen Nieminen Yılmaz Kaya Demir Şahin Çelik Popescu Ionescu Dumitru Nagy Kovács Szabó Tóth Kim Park
Lee Choi Jung Hernández López Martínez Ramírez Torres Flores Tuilagi Leota Fa'alogo Kahananui Akana Kealoha Jensen
Nielsen Andersen Hansen Lindqvist Bergström Moreau Lefèvre Girard Fontaine Weber Wagner Hoffmann Schröder Horvat
Jovanović Petrović Kovačević Jones Davies MacLeod Campbell Stewart Cohen Levi Mizrahi Friedman Ivanov Petrova
Smirnov Volkova Kuznetsov Shevchenko Bondarenko Kovalenko Dvořák Svoboda Černá Hossain Chowdhury Ahmadi Karimi
Hosseini de_Vries van_Dijk Bakker Janssen Visser Bianchi Romano Ricci Greco Conti Brennan Doyle Gallagher Quinn
Okoro Abubakar Bello Yusuf Danjuma Achterberg Lindgren Vasquez Ochoa Delgado Mendoza Castillo
""".replace("_", " ").split()

# Whole names written in their own script: copied character for character.
SCRIPT_NAMES = """
王芳 李娜 张伟 陈静 刘洋 黄磊 山田花子 佐藤健 鈴木一郎 田中美咲 김민준 이서연 박지훈 최유나 Αλέξανδρος Σοφία Γιώργος
Ελένη Дмитрий Ольга Анна Сергей Наталья محمد أحمد فاطمة ليلى يوسف अनन्या राहुल प्रिया ষ্টিভ স্নেহা שירה יוסי
Ngọc Ánh Đức Thắng Phương Thảo Zsófia Ádám Łucja Żaneta
""".split()

SYLLABLES = "ka lo mi ra ne tu vi sa do re ya zu ko li ma no be ta fi ga hu je ki lu mo na pi ro se te".split()
END_SYLLABLES = "n l s r a o i e ia an el or".split()


def syllable_word(rng: random.Random, low: int = 2, high: int = 3) -> str:
    """A made-up word ('Kalomin', 'Tuvira'): no list holds it, so it can only be copied."""
    word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(low, high)))
    if rng.random() < 0.5:
        word += rng.choice(END_SYLLABLES)
    return word.capitalize()


def person(rng: random.Random) -> tuple[str, str]:
    """(first name, full name) of someone: a listed name, a made-up one or one in its own script."""
    roll = rng.random()
    if roll < 0.1:
        full = rng.choice(SCRIPT_NAMES)
        return full, full
    first = syllable_word(rng) if roll < 0.35 else rng.choice(FIRST_NAMES)
    last = syllable_word(rng) if rng.random() < 0.3 else rng.choice(LAST_NAMES)
    return first, f"{first} {last}"


COLOURS = "black white grey navy red green olive sage teal mustard pink lilac cream charcoal orange yellow".split()
MATERIALS = "bamboo oak walnut steel cast-iron linen cotton wool leather glass ceramic enamel copper marble".split()
SIZES = "large,small,mini,XL,2-litre,500 ml,king-size,24-inch,10 kg,5 m,double,travel".split(",")
# (singular/plural) of things people buy, from many shops; a product is often given a describing word (product)
PRODUCTS = """
mug/mugs, kettle/kettles, kettlebell/kettlebells, treadmill/treadmills, yoga mat/yoga mats,
desk lamp/desk lamps, toner cartridge/toner cartridges, ink cartridge/ink cartridges, notebook/notebooks,
fountain pen/fountain pens, backpack/backpacks, phone case/phone cases, screen protector/screen protectors,
USB-C cable/USB-C cables, power bank/power banks, wireless mouse/wireless mice, keyboard/keyboards,
monitor/monitors, webcam/webcams, office chair/office chairs, standing desk/standing desks,
bookshelf/bookshelves, sofa/sofas, armchair/armchairs, duvet/duvets, pillow/pillows, bath towel/bath towels,
shower curtain/shower curtains, rug/rugs, curtain/curtains, frying pan/frying pans, saucepan/saucepans,
chef's knife/chef's knives, chopping board/chopping boards, coffee grinder/coffee grinders,
espresso machine/espresso machines, toaster/toasters, blender/blenders, air fryer/air fryers,
rice cooker/rice cookers, microwave/microwaves, dishwasher/dishwashers, fridge/fridges,
washing machine/washing machines, tumble dryer/tumble dryers, vacuum cleaner/vacuum cleaners, iron/irons,
hair dryer/hair dryers, electric toothbrush/electric toothbrushes, bike helmet/bike helmets,
bike light/bike lights, inner tube/inner tubes, bike chain/bike chains, brake pad/brake pads, saddle/saddles,
pump/pumps, running shoe/running shoes, hiking boot/hiking boots, rain jacket/rain jackets,
wool jumper/wool jumpers, t-shirt/t-shirts, sock/socks, glove/gloves, scarf/scarves, beanie/beanies,
swimsuit/swimsuits, baby car seat/baby car seats, pram/prams, high chair/high chairs, nappy bin/nappy bins,
baby monitor/baby monitors, dog bed/dog beds, cat tree/cat trees, dog lead/dog leads, dog bowl/dog bowls,
fish tank/fish tanks, guitar string set/guitar string sets, ukulele/ukuleles, drum stick/drum sticks,
keyboard stand/keyboard stands, vinyl record/vinyl records, paperback/paperbacks, jigsaw puzzle/jigsaw puzzles,
board game/board games, LEGO set/LEGO sets, watercolour set/watercolour sets, paint roller/paint rollers,
paint brush/paint brushes, drill/drills, screwdriver set/screwdriver sets, ladder/ladders,
extension lead/extension leads, light bulb/light bulbs, smoke alarm/smoke alarms, door mat/door mats,
garden hose/garden hoses, lawnmower/lawnmowers, plant pot/plant pots, houseplant/houseplants,
watering can/watering cans, bird feeder/bird feeders, tent/tents, sleeping bag/sleeping bags,
camping stove/camping stoves, water bottle/water bottles, thermos flask/thermos flasks, lunch box/lunch boxes,
climbing rope/climbing ropes, chalk bag/chalk bags, dumbbell/dumbbells, resistance band/resistance bands,
football/footballs, tennis racket/tennis rackets, badminton set/badminton sets, skateboard/skateboards,
router/routers, printer/printers, laptop/laptops, tablet/tablets, smartwatch/smartwatches,
headphones/headphones, speaker/speakers, TV bracket/TV brackets, HDMI cable/HDMI cables, SD card/SD cards,
hard drive/hard drives, candle/candles, picture frame/picture frames, wall clock/wall clocks, vase/vases,
tea set/tea sets, wine glass/wine glasses, sourdough starter kit/sourdough starter kits,
spice rack/spice racks, bread bin/bread bins, food processor/food processors
"""
PRODUCT_NOUNS = [tuple(entry.strip().split("/")) for entry in PRODUCTS.replace("\n", " ").split(",")]
# goods bought by the pack: "two boxes of green tea" is 2 of "green tea"
PACKED_GOODS = {
    "green tea": ("box", "boxes"),
    "coffee beans": ("bag", "bags"),
    "dog food": ("bag", "bags"),
    "compost": ("bag", "bags"),
    "AA batteries": ("pack", "packs"),
    "printer paper": ("box", "boxes"),
    "baby wipes": ("pack", "packs"),
    "wall paint": ("tin", "tins"),
    "sparkling water": ("crate", "crates"),
    "kitchen roll": ("pack", "packs"),
    "climbing chalk": ("bag", "bags"),
    "bin bags": ("roll", "rolls"),
    "olive oil": ("bottle", "bottles"),
    "oat milk": ("carton", "cartons"),
    "cat litter": ("sack", "sacks"),
    "masking tape": ("roll", "rolls"),
    "tennis balls": ("tube", "tubes"),
    "protein powder": ("tub", "tubs"),
}


def product(rng: random.Random) -> tuple[str, str]:
    """(singular, plural) of a product: a noun, often with a colour, material, size or a brand."""
    singular, plural = rng.choice(PRODUCT_NOUNS)
    roll = rng.random()
    if roll < 0.2:
        word = rng.choice(COLOURS)
    elif roll < 0.28:
        word = rng.choice(MATERIALS)
    elif roll < 0.45:
        word = rng.choice(SIZES)
    elif roll < 0.7:
        word = syllable_word(rng, 1, 2) if rng.random() < 0.5 else rng.choice(BRANDS)
        if rng.random() < 0.4:  # a model code: "Brother TN-2420 toner cartridge", "Kalo X200 kettle"
            word += " " + model_code(rng)
    else:
        return singular, plural
    return f"{word} {singular}", f"{word} {plural}"


def model_code(rng: random.Random) -> str:
    letters = "".join(rng.choice("ABCDEFGHJKLMNPRSTVXZ") for _ in range(rng.randint(1, 3)))
    number = str(rng.choice([rng.randint(2, 99), rng.randint(100, 9999)]))
    return rng.choice([f"{letters}{number}", f"{letters}-{number}", f"{number}{letters[0]}", number])


BRANDS = (
    "Bosch Philips Nike Adidas IKEA Dyson Sony Samsung Brother Canon Garmin Lodge Tefal Yeti Osprey Kenwood".split()
)
RESTAURANTS = """
Luigi's|The Copper Pot|Sakura House|Casa Lola|The Green Fig|Bombay Brasserie|Le Petit Coin|The Anchor|Pho Saigon
|Taverna Olympia|The Blue Door|Nonna's Kitchen|Spice Route|The Old Mill|Café Brera|Mama Africa|Seoul Kitchen
|The Fox & Hound|El Rancho|Zaytoon|Golden Dragon|Trattoria Sole|The Bothy|Kaiseki Ren
""".replace("\n", "").split("|")
PROBLEMS = [
    "stopped working",
    "arrived broken",
    "arrived with a cracked screen",
    "makes a loud grinding noise",
    "won't turn on",
    "keeps disconnecting",
    "is leaking",
    "smells of burning",
    "has a cracked case",
    "arrived scratched",
    "is missing parts",
    "keeps tripping the fuse",
    "came in the wrong colour",
    "fell apart after a week",
    "doesn't charge",
    "has a tear in it",
    "wobbles",
    "is the wrong size",
    "rattles when it runs",
    "gets really hot",
]
