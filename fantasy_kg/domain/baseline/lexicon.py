"""Closed word lists the baseline extractor reads names and cues with.

They are English-fiction generic on purpose: nothing here names a person or place of any series.
Series knowledge enters only through the ontology's canonical renaming rules, so the same lists
serve a hand-written sample series and the Oz books alike.
"""


def _words(block: str) -> frozenset[str]:
    """A word list written as whitespace-separated text (easier to read and diff than a list)."""
    return frozenset(block.split())


# Words that are never a name on their own, wherever they stand (sentence-initial or not).
STOPWORDS: frozenset[str] = _words(
    """
    A An And As At But By For From If In Into Is It Its Nor Not Of On Or Our So The Then Than
    That This These Those There Here Thus To Too Up Upon Was We Were What When Where Which While
    Who Whom Whose Why How With Without Yet You Your Yours He Him His She Her Hers They Them Their
    Theirs I Me My Mine Us Ours Oh Ah Alas Well Yes No Nay Aye Now Only Even Just Still All Some
    Every Each Any Both Either Neither Many Much More Most Few Other Another Such Same Once After
    Before Because Since Though Although Unless Until Till Over Under Above Below Behind Beyond
    Between Among Through Across Toward Towards Around About Against Along Beside Besides Near
    Perhaps Maybe Indeed Surely Never Always Often Sometimes Again Also Instead Meanwhile Later
    Soon First Last Next Then Do Does Did Done Be Been Being Have Has Had Shall Should Will Would
    Can Could May Might Must Let Come Go Look See Please Thank Thanks Hello Goodbye Farewell Dear
    Chapter Book Part Volume Contents Prologue Epilogue Appendix Index Preface
    Introduction Note Author Illustration Illustrated End Finis St Mt
    One Two Three Four Five Six Seven Eight Nine Ten Eleven Twelve Hundred Thousand
    Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April June
    July August September October November December Spring Summer Autumn Winter God Heaven Hell
    OK Okay Hmm Hush Goodness Gracious Mercy Nonsense Hurrah Hurray Hooray Bravo Fie Pooh Ho Ha
    Ouch Ugh Whew Whoa Hey Hi Good-bye Good-by Goodbye Majesty Highness Excellency Lordship
    Ladyship Honor Honour Worship Grace Nobody Somebody Someone Everyone Everybody Anybody Anyone
    Nothing Something Everything Anything None Whoever Whatever Wherever Whenever
    """
)

# Titles that make the following name a Character (and are kept as its ``title`` attribute).
TITLES: frozenset[str] = _words(
    """
    Lord Lady Queen King Sir Dame Captain Master Mistress Prince Princess Duke Duchess Earl Count
    Countess Baron Baroness Marquis Emperor Empress Regent Steward Warden Marshal General Commander
    Lieutenant Sergeant Admiral Knight Squire Father Mother Brother Sister Uncle Aunt Grandfather
    Grandmother Elder Abbot Abbess Bishop Archbishop Cardinal Saint Maester Magister Archmage
    Chancellor Mayor Professor Doctor Dr Mr Mrs Ms Miss Mister Madam Madame Goodman Goodwife
    """
)

# Titles after which "of <Place>" belongs to the name ("King of Ev", "Witch of the North").
PERSON_OF_HEADS: frozenset[str] = _words(
    """
    Lord Lady Queen King Prince Princess Duke Duchess Earl Count Countess Baron Baroness Emperor
    Empress Regent Steward Warden Marshal Witch Wizard Sorceress Sorcerer Enchantress Magician
    Ruler Master Mistress Keeper Guardian Knight
    """
)

# Heads that make a span a Location ("River Sallow", "Emerald City", "Land of Oz").
PLACE_HEADS: frozenset[str] = _words(
    """
    City Town Village Hamlet River Forest Wood Woods Mountain Mountains Mount Hill Hills Valley Vale
    Lake Sea Ocean Bay Gulf Isle Island Islands Kingdom Realm Empire Land Lands Country Province
    Desert Marsh Marshes Fen Fens Castle Fortress Keep Tower Citadel Palace Temple Abbey Bridge
    Road Gate Gates Pass Plain Plains Moor Moors Coast Shore Harbor Harbour Port Falls Street
    Square Market Inn Tavern Hall Gardens Garden Cave Caves Caverns Mine Mines Wastes Reach March
    Marches Downs Cliffs Peak Peaks Glen Ford Crossing Haven Sound Strait Straits Steppe
    """
)

# Place words that lead a name ("River Sallow", "Mount Munch", "Lake Quad").
PLACE_FIRST_HEADS: frozenset[str] = _words("River Mount Lake Isle Port Fort Castle Cape Loch Glen")

# Heads that make a span an Organization ("Order of the Lantern", "Ashen Court").
ORG_HEADS: frozenset[str] = _words(
    """
    Order Guild Court Company Brotherhood Sisterhood Fellowship Council Circle Army Legion Guard
    Watch League Society Brethren Conclave Assembly Senate Parliament Church Cult Clan Tribe House
    Houses Band Host Fleet Navy Cabal Syndicate Covenant Alliance Academy College Knights
    """
)

# Heads that make a span an Artifact ("the Ashen Crown", "the Golden Cap").
ARTIFACT_HEADS: frozenset[str] = _words(
    """
    Crown Sword Glass Stone Ring Blade Belt Cap Staff Wand Amulet Cloak Shield Helm Helmet Horn
    Key Mirror Orb Chalice Cup Grail Picture Slippers Shoes Spear Bow Axe Dagger Scepter Sceptre
    Talisman Pendant Necklace Locket Gem Jewel Tome Scroll Lamp Lantern Banner Hammer Rod Compass
    Map Seal Circlet Diadem Bell Harp Flute Whistle Charm Powder Elixir Potion
    """
)

# Heads that start an Event when followed by "of" ("the Siege of Greywatch").
EVENT_HEADS: frozenset[str] = _words(
    """
    Siege Battle Night Day War Fall Sack Burning Rising Massacre Treaty Council Feast Festival
    Tournament Wedding Coronation Rebellion Revolt Uprising Flight Exile Conquest Destruction
    Founding Breaking Storming Defense Defence Harrowing Year Age Winter Summer
    """
)

# Event heads that work without "of" as the last word ("the Red Wedding", "the Long Night").
EVENT_TAIL_HEADS: frozenset[str] = _words(
    """
    Siege Battle War Massacre Rebellion Revolt Uprising Wedding Coronation Tournament Festival
    Feast Burning Sack Conquest Exile Harrowing
    """
)

# Lowercase place nouns in "the city of X", "the river X" constructions (the cue precedes).
PLACE_NOUNS: tuple[str, ...] = (
    "city",
    "town",
    "village",
    "hamlet",
    "river",
    "fortress",
    "province",
    "kingdom",
    "land",
    "country",
    "realm",
    "island",
    "isle",
    "forest",
    "castle",
    "port",
    "valley",
    "region",
    "duchy",
    "county",
    "empire",
    "citadel",
    "keep",
    "tower",
    "lake",
    "mountains",
    "capital",
    "marsh",
    "desert",
)

# Prepositions that put the following name in a place ("in Dunmere", "toward Greywatch").
PLACE_PREPOSITIONS: tuple[str, ...] = (
    "in",
    "into",
    "inside",
    "within",
    "across",
    "through",
    "toward",
    "towards",
    "near",
    "outside",
    "beyond",
)

# Verbs of speech and action whose subject or object is a person ("said Mira", "Mira nodded").
PERSON_VERBS: tuple[str, ...] = (
    "said",
    "asked",
    "replied",
    "answered",
    "cried",
    "called",
    "shouted",
    "whispered",
    "muttered",
    "murmured",
    "exclaimed",
    "declared",
    "added",
    "continued",
    "laughed",
    "smiled",
    "nodded",
    "sighed",
    "frowned",
    "shrugged",
    "grinned",
    "looked",
    "turned",
    "thought",
    "knew",
    "felt",
    "saw",
    "heard",
    "went",
    "came",
    "walked",
    "ran",
    "stood",
    "sat",
    "took",
    "gave",
    "told",
    "wept",
    "spoke",
    "began",
    "remarked",
    "returned",
    "observed",
    "inquired",
    "demanded",
    "protested",
    "agreed",
    "explained",
    "suggested",
    "screamed",
    "sobbed",
    "giggled",
)

# Occupations read from appositives ("Tomas Reed, the ferryman"); generic fantasy trades.
OCCUPATIONS: frozenset[str] = _words(
    """
    ferryman boatman bargeman fisherman smith blacksmith carpenter mason weaver tailor baker
    brewer innkeeper tavernkeeper merchant trader peddler farmer shepherd herdsman miller hunter
    trapper woodsman woodcutter woodman forester soldier guard guardsman captain knight squire
    archer sailor mariner pilot scholar scribe clerk librarian priest priestess monk nun healer
    physician surgeon apothecary herbalist alchemist wizard witch sorcerer sorceress mage
    magician enchanter enchantress steward servant maid cook groom stablehand messenger herald
    minstrel bard singer musician player juggler thief spy assassin mercenary smuggler pirate
    queen king prince princess lord lady duke duchess emperor empress regent ruler chieftain chief
    general commander marshal warden jailer gaoler executioner judge magistrate mayor
    cartographer mapmaker lamplighter glassblower glazier potter tanner cobbler shoemaker
    jeweler goldsmith silversmith armorer armourer fletcher bowyer cooper chandler
    """
)
