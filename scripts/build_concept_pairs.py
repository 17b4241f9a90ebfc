"""Build mechlin/datasets/data/concepts.json: counterfactual word pairs of linear concepts.

Run at development time (the package only reads the JSON):
    python scripts/build_concept_pairs.py

The concepts follow the categories Park, Choe & Veitch (2024) took from the BATS 3.0 analogy
set (Gladkova et al. 2016) plus their language pairs, but every word list below was written by
hand for mechlin (MIT); nothing is copied from BATS. Inflection tables, derivations,
gender pairs, meronyms, colours and translations are common English (and French / Spanish /
German) vocabulary. ``country -> capital`` and ``country -> language`` come from
``mechlin/datasets/data/countries.json`` (PyPI ``countryinfo`` 1.0.1, MIT). Derived lists
(``Ving -> Ved``, ``French -> German``, ``lower -> upper``, ...) are joins of the tables here.
Pairs are kept whatever the tokenizer: ``mechlin.concept_directions`` drops, and reports, the
pairs whose words are not single tokens for a given model.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "mechlin" / "datasets" / "data" / "concepts.json"
HAND = "hand-written for mechlin (MIT); category after BATS 3.0 / Park et al. 2024"

# (infinitive, 3rd person singular, present participle, simple past)
VERBS = """
walk walks walking walked | play plays playing played | work works working worked
talk talks talking talked | look looks looking looked | call calls calling called
ask asks asking asked | help helps helping helped | want wants wanting wanted
need needs needing needed | open opens opening opened | start starts starting started
turn turns turning turned | move moves moving moved | live lives living lived
love loves loving loved | use uses using used | create creates creating created
change changes changing changed | learn learns learning learned | add adds adding added
follow follows following followed | show shows showing showed | visit visits visiting visited
jump jumps jumping jumped | watch watches watching watched | kill kills killing killed
pull pulls pulling pulled | push pushes pushing pushed | stay stays staying stayed
offer offers offering offered | allow allows allowing allowed | answer answers answering answered
listen listens listening listened | happen happens happening happened
appear appears appearing appeared | include includes including included
continue continues continuing continued | report reports reporting reported
decide decides deciding decided | receive receives receiving received
develop develops developing developed | explain explains explaining explained
go goes going went | take takes taking took | make makes making made | see sees seeing saw
come comes coming came | know knows knowing knew | give gives giving gave
find finds finding found | think thinks thinking thought | tell tells telling told
become becomes becoming became | leave leaves leaving left | write writes writing wrote
run runs running ran | eat eats eating ate | speak speaks speaking spoke
sing sings singing sang | drive drives driving drove | buy buys buying bought
sell sells selling sold | fly flies flying flew | carry carries carrying carried
try tries trying tried | study studies studying studied
"""

NOUNS = """
cat cats | dog dogs | car cars | house houses | book books | tree trees | bird birds
girl girls | boy boys | friend friends | hand hands | eye eyes | door doors | window windows
road roads | city cities | country countries | baby babies | story stories | family families
party parties | church churches | box boxes | bus buses | class classes | dish dishes
glass glasses | horse horses | river rivers | student students | teacher teachers
school schools | computer computers | game games | song songs | word words | idea ideas
problem problems | name names | year years | week weeks | day days | month months | hour hours
person people | man men | woman women | child children | foot feet | tooth teeth | mouse mice
leaf leaves | knife knives | wife wives | life lives | wolf wolves | goose geese
"""

ADJECTIVES = """
big bigger biggest | small smaller smallest | large larger largest | long longer longest
short shorter shortest | tall taller tallest | high higher highest | low lower lowest
old older oldest | young younger youngest | new newer newest | fast faster fastest
slow slower slowest | strong stronger strongest | weak weaker weakest | hard harder hardest
easy easier easiest | happy happier happiest | early earlier earliest | late later latest
cheap cheaper cheapest | rich richer richest | poor poorer poorest | dark darker darkest
light lighter lightest | bright brighter brightest | warm warmer warmest | cold colder coldest
hot hotter hottest | deep deeper deepest | wide wider widest | great greater greatest
clean cleaner cleanest | close closer closest | simple simpler simplest | safe safer safest
smart smarter smartest | quick quicker quickest | loud louder loudest
quiet quieter quietest | heavy heavier heaviest | busy busier busiest | good better best
bad worse worst | far farther farthest | thin thinner thinnest | thick thicker thickest
sweet sweeter sweetest | fresh fresher freshest | nice nicer nicest
"""

UN_ADJ = """
happy unhappy | able unable | known unknown | likely unlikely | usual unusual | fair unfair
clear unclear | common uncommon | comfortable uncomfortable | certain uncertain | aware unaware
fortunate unfortunate | necessary unnecessary | important unimportant | healthy unhealthy
safe unsafe | stable unstable | lucky unlucky | kind unkind | friendly unfriendly
popular unpopular | believable unbelievable | acceptable unacceptable | available unavailable
expected unexpected | limited unlimited | employed unemployed | natural unnatural
official unofficial | real unreal | true untrue | wise unwise | finished unfinished
willing unwilling | conscious unconscious | pleasant unpleasant | familiar unfamiliar
predictable unpredictable | reasonable unreasonable | successful unsuccessful
reliable unreliable | equal unequal | controlled uncontrolled | sure unsure
related unrelated | seen unseen
"""

ADJ_LY = """
quick quickly | slow slowly | easy easily | careful carefully | clear clearly | real really
usual usually | final finally | recent recently | actual actually | simple simply
complete completely | exact exactly | direct directly | similar similarly | strong strongly
quiet quietly | happy happily | sad sadly | nice nicely | bad badly | free freely | open openly
rare rarely | main mainly | large largely | full fully | total totally | certain certainly
general generally | natural naturally | serious seriously | perfect perfectly
particular particularly | special specially | official officially | normal normally
public publicly | true truly | entire entirely | obvious obviously | rapid rapidly
sudden suddenly | previous previously | immediate immediately | legal legally
frequent frequently | separate separately | typical typically
"""

VERB_ER = """
teach teacher | write writer | play player | sing singer | run runner | drive driver
work worker | lead leader | read reader | speak speaker | build builder | paint painter
own owner | report reporter | manage manager | design designer | develop developer
produce producer | farm farmer | bake baker | hunt hunter | fight fighter | win winner
lose loser | dance dancer | swim swimmer | follow follower | listen listener | rule ruler
print printer | compute computer | kill killer | photograph photographer
research researcher | employ employer | help helper | walk walker | shoot shooter
catch catcher | train trainer | publish publisher | sell seller | buy buyer | send sender
observe observer | support supporter
"""

VERB_TION = """
create creation | act action | add addition | educate education | inform information
relate relation | locate location | operate operation | produce production
protect protection | collect collection | connect connection | direct direction
elect election | reduce reduction | introduce introduction | describe description
compete competition | define definition | explain explanation | imagine imagination
organize organization | populate population | situate situation | celebrate celebration
communicate communication | generate generation | invent invention | prevent prevention
predict prediction | select selection | construct construction | destroy destruction
instruct instruction | correct correction | attend attention | invite invitation
translate translation | examine examination | combine combination
consider consideration | found foundation | inspire inspiration | motivate motivation
register registration | vary variation | suggest suggestion | adopt adoption | solve solution
"""

VERB_MENT = """
develop development | manage management | govern government | move movement | pay payment
agree agreement | state statement | treat treatment | improve improvement
require requirement | achieve achievement | employ employment | equip equipment
establish establishment | enjoy enjoyment | entertain entertainment | invest investment
replace replacement | settle settlement | announce announcement | argue argument
assess assessment | assign assignment | commit commitment | place placement
punish punishment | encourage encouragement | engage engagement | excite excitement
adjust adjustment | appoint appointment | arrange arrangement | attach attachment
measure measurement | fulfill fulfillment | amaze amazement | disappoint disappointment
enforce enforcement | enhance enhancement | enroll enrollment | retire retirement
judge judgment | embarrass embarrassment | advertise advertisement | recruit recruitment
"""

VERB_ABLE = """
accept acceptable | adjust adjustable | afford affordable | avoid avoidable
believe believable | change changeable | comfort comfortable | compare comparable
consider considerable | count countable | debate debatable | depend dependable
drink drinkable | enjoy enjoyable | explain explainable | forget forgettable
manage manageable | measure measurable | move movable | notice noticeable
predict predictable | prefer preferable | profit profitable | read readable
recognize recognizable | rely reliable | remark remarkable | remove removable
renew renewable | respect respectable | reach reachable | suit suitable | sustain sustainable
teach teachable | train trainable | understand understandable | use usable | value valuable
wash washable | wear wearable | work workable | answer answerable | break breakable
desire desirable | question questionable | achieve achievable | deliver deliverable
download downloadable | print printable | search searchable
"""

MALE_FEMALE = """
king queen | man woman | boy girl | father mother | son daughter | brother sister
husband wife | uncle aunt | nephew niece | grandfather grandmother | grandson granddaughter
prince princess | duke duchess | emperor empress | lord lady | sir madam | he she | him her
actor actress | waiter waitress | host hostess | hero heroine | god goddess | priest priestess
monk nun | bull cow | rooster hen | stallion mare | boyfriend girlfriend | groom bride
widower widow | male female | masculine feminine | dad mom | daddy mommy | papa mama
grandpa grandma | stepfather stepmother | headmaster headmistress | policeman policewoman
businessman businesswoman | spokesman spokeswoman | count countess | baron baroness
lad lass | schoolboy schoolgirl | boys girls | men women | kings queens | brothers sisters
sons daughters | fathers mothers
"""

PRONOUN_POSSESSIVE = "I my | you your | he his | she her | it its | we our | they their"

THING_PART = """
car wheel | tree leaf | house roof | bird wing | fish fin | hand finger | foot toe | face nose
book page | bicycle pedal | flower petal | room wall | door handle | shirt collar | shoe heel
knife blade | computer keyboard | chair leg | cat tail | arm elbow | leg knee | ship deck
plane wing | city street | tooth root | apple core | piano key | guitar string | camera lens
phone screen | bed mattress | kitchen sink | river bank | mountain peak | year month
week day | hour minute | castle tower | forest tree | army soldier | team player
sentence word | word letter | egg yolk | body heart | head brain | clock hand | wheel spoke
"""

THING_COLOR = """
banana yellow | lemon yellow | grass green | sky blue | snow white | coal black | blood red
tomato red | cherry red | strawberry red | milk white | cloud white | lime green | leaf green
frog green | emerald green | sea blue | ocean blue | sapphire blue | carrot orange
pumpkin orange | chocolate brown | coffee brown | wood brown | soil brown | crow black
night black | ink black | tar black | salt white | sugar white | rose red | ruby red
fire red | sun yellow | corn yellow | plum purple | grape purple | violet purple
eggplant purple | flamingo pink | pig pink | elephant grey | ash grey
"""

ANIMAL_YOUNG = """
dog puppy | cat kitten | cow calf | horse foal | sheep lamb | pig piglet | goat kid
chicken chick | duck duckling | goose gosling | bear cub | lion cub | tiger cub | wolf pup
deer fawn | frog tadpole | kangaroo joey | swan cygnet | owl owlet | eagle eaglet
butterfly caterpillar | seal pup | whale calf | elephant calf | giraffe calf | hen chick
"""

# English, French, Spanish, German (one meaning per row; "-" where no one-word translation).
TRANSLATIONS = """
water eau agua Wasser | fire feu fuego Feuer | house maison casa Haus | cat chat gato Katze
dog chien perro Hund | book livre libro Buch | car voiture coche Auto | city ville ciudad Stadt
man homme hombre Mann | woman femme mujer Frau | child enfant niño Kind | king roi rey König
queen reine reina Königin | friend ami amigo Freund | school école escuela Schule
sun soleil sol Sonne | moon lune luna Mond | star étoile estrella Stern | sea mer mar Meer
tree arbre árbol Baum | flower fleur flor Blume | bread pain pan Brot | wine vin vino Wein
cheese fromage queso Käse | apple pomme manzana Apfel | milk lait leche Milch
world monde mundo Welt | day jour día Tag | night nuit noche Nacht | time temps tiempo Zeit
life vie vida Leben | love amour amor Liebe | heart cœur corazón Herz | head tête cabeza Kopf
hand main mano Hand | door porte puerta Tür | window fenêtre ventana Fenster
street rue calle Straße | country pays país Land | language langue idioma Sprache
word mot palabra Wort | black noir negro schwarz | white blanc blanco weiß | red rouge rojo rot
green vert verde grün | blue bleu azul blau | big grand grande groß | small petit pequeño klein
new nouveau nuevo neu | old vieux viejo alt | good bon bueno gut | beautiful beau hermoso schön
father père padre Vater | mother mère madre Mutter | brother frère hermano Bruder
sister sœur hermana Schwester | summer été verano Sommer | winter hiver invierno Winter
morning matin mañana Morgen | river rivière río Fluss | mountain montagne montaña Berg
church église iglesia Kirche | money argent dinero Geld | horse cheval caballo Pferd
bird oiseau pájaro Vogel | fish poisson pez Fisch | week semaine semana Woche | yes oui sí ja
no non no nein | always toujours siempre immer | never jamais nunca nie | very très muy sehr
with avec con mit | without sans sin ohne | where où dónde wo | who qui quién wer
why pourquoi - warum | here ici aquí hier | now maintenant ahora jetzt
"""
LANGUAGES = ("English", "French", "Spanish", "German")


def rows(table: str) -> list[list[str]]:
    out = [r.split() for r in table.replace("\n", " | ").split("|") if r.strip()]
    widths = {len(r) for r in out}
    assert len(widths) == 1, (
        f"rows of different widths: {[r for r in out if len(r) != len(out[0])]}"
    )
    return out


def column_pairs(table: str, a: int, b: int) -> list[list[str]]:
    # Words equal up to case (English "hand", German "Hand") would be capitalization pairs.
    return [
        [r[a], r[b]]
        for r in rows(table)
        if "-" not in (r[a], r[b]) and r[a].lower() != r[b].lower()
    ]


def concept(name: str, category: str, pairs: list[list[str]], source: str = HAND) -> dict:
    unique: list[list[str]] = []
    for pair in pairs:
        if pair not in unique:
            unique.append(pair)
    return {"name": name, "category": category, "source": source, "pairs": unique}


def build() -> list[dict]:
    out = []
    forms = ("verb", "3pSg", "Ving", "Ved")
    for a, b in [(0, 1), (0, 2), (0, 3), (2, 1), (2, 3), (1, 3)]:
        out.append(concept(f"{forms[a]} -> {forms[b]}", "inflection", column_pairs(VERBS, a, b)))
    out.append(concept("noun -> plural", "inflection", column_pairs(NOUNS, 0, 1)))
    out.append(concept("adj -> comparative", "inflection", column_pairs(ADJECTIVES, 0, 1)))
    out.append(concept("adj -> superlative", "inflection", column_pairs(ADJECTIVES, 0, 2)))
    for name, table in [
        ("adj -> un+adj", UN_ADJ),
        ("adj -> adj+ly", ADJ_LY),
        ("verb -> V+er", VERB_ER),
        ("verb -> V+tion", VERB_TION),
        ("verb -> V+ment", VERB_MENT),
        ("verb -> V+able", VERB_ABLE),
    ]:
        out.append(concept(name, "derivation", column_pairs(table, 0, 1)))
    out.append(concept("male -> female", "semantic", column_pairs(MALE_FEMALE, 0, 1)))
    out.append(concept("pronoun -> possessive", "semantic", column_pairs(PRONOUN_POSSESSIVE, 0, 1)))
    out.append(concept("thing -> part", "semantic", column_pairs(THING_PART, 0, 1)))
    out.append(concept("thing -> color", "semantic", column_pairs(THING_COLOR, 0, 1)))
    out.append(concept("animal -> young", "semantic", column_pairs(ANIMAL_YOUNG, 0, 1)))
    words = [w for r in rows(NOUNS) + rows(ADJECTIVES) for w in r[:1]]
    out.append(
        concept("lower -> upper", "capitalization", [[w, w.capitalize()] for w in words[:60]])
    )
    for a, b in [(0, 1), (0, 2), (0, 3), (1, 3), (1, 2), (3, 2)]:
        name = f"{LANGUAGES[a]} -> {LANGUAGES[b]}"
        out.append(concept(name, "language", column_pairs(TRANSLATIONS, a, b)))
    countries = json.loads(
        (ROOT / "mechlin" / "datasets" / "data" / "countries.json").read_text("utf-8")
    )
    kb = "mechlin/datasets/data/countries.json (PyPI countryinfo 1.0.1, MIT)"
    capital = [[c["name"], c["capital"]] for c in countries if c["capital"] not in ("", c["name"])]
    out.append(concept("country -> capital", "knowledge", capital, kb))
    language = [[c["name"], c["languages"][0]] for c in countries if c["languages"]]
    out.append(concept("country -> language", "knowledge", language, kb))
    return out


def main() -> None:
    concepts = build()
    OUT.write_text(json.dumps({"concepts": concepts}, ensure_ascii=False, indent=1) + "\n")
    for c in concepts:
        print(f"{c['name']:24s} {len(c['pairs']):4d} pairs")
    print(f"wrote {OUT.relative_to(ROOT)} ({len(concepts)} concepts)")


if __name__ == "__main__":
    main()
