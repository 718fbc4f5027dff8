"""The documented tag vocabularies of the public catalogs adswap reads (facts, written
down here as data): the tests check the bundled tag maps against them and write small
catalogs in each format from them."""

# MTG-Jamendo autotagging.tsv and its subsets: genre, instrument and mood/theme tags
# (a superset of the official splits' 87 / 40 / 56 and of the top-50 list).
MTG_JAMENDO = {
    "genre": """60s 70s 80s 90s acidjazz african alternative alternativerock ambient
        atmospheric blues bluesrock bossanova breakbeat celtic chanson chillout choir
        classical classicrock club contemporary country dance darkambient darkwave
        deephouse disco downtempo drumnbass dub dubstep easylistening edm electronic
        electronica electropop ethnicrock ethno eurodance experimental folk funk fusion
        gothic groove grunge hard hardrock heavymetal hiphop house idm improvisation indie
        industrial instrumentalpop instrumentalrock jazz jazzfunk jazzfusion latin lounge
        medieval metal minimal newage newwave orchestral oriental pop popfolk poprock
        postrock progressive psychedelic punkrock rap reggae rnb rock rocknroll
        singersongwriter ska soul soundtrack swing symphonic synthpop techno trance tribal
        triphop world worldfusion""".split(),
    "instrument": """accordion acousticbassguitar acousticguitar bass beat bell bongo brass
        cello clarinet classicalguitar computer doublebass drummachine drums electricguitar
        electricpiano flute guitar harmonica harp horn keyboard oboe orchestra organ pad
        percussion piano pipeorgan rhodes sampler saxophone strings synthesizer trombone
        trumpet ukulele viola violin voice""".split(),
    "mood/theme": """action adventure advertising ambiental background ballad calm children
        christmas commercial cool corporate dark deep documentary drama dramatic dream
        emotional energetic epic fast film fun funny game groovy happy heavy holiday
        hopeful horror inspiring love meditative melancholic mellow melodic motivational
        movie nature party positive powerful relaxing retro romantic sad sexy slow soft
        soundscape space sport summer trailer travel upbeat uplifting""".split(),
}

# MagnaTagATune annotations_final.csv: its 188 tag columns, in file order.
MAGNATAGATUNE = [
    "no voice", "singer", "duet", "plucking", "hard rock", "world", "bongos", "harpsichord",
    "female singing", "clasical", "sitar", "chorus", "female opera", "male vocal", "vocals",
    "clarinet", "heavy", "silence", "beats", "men", "woodwind", "funky", "no strings",
    "chimes", "foreign", "no piano", "horns", "classical", "female", "no voices",
    "soft rock", "eerie", "spacey", "jazz", "guitar", "quiet", "no beat", "banjo",
    "electric", "solo", "violins", "folk", "female voice", "wind", "happy", "ambient",
    "new age", "synth", "funk", "no singing", "middle eastern", "trumpet", "percussion",
    "drum", "airy", "voice", "repetitive", "birds", "space", "strings", "bass",
    "harpsicord", "medieval", "male voice", "girl", "keyboard", "acoustic", "loud",
    "classic", "string", "drums", "electronic", "not classical", "chanting", "no violin",
    "not rock", "no guitar", "organ", "no vocal", "talking", "choral", "weird", "opera",
    "soprano", "fast", "acoustic guitar", "electric guitar", "male singer", "man singing",
    "classical guitar", "country", "violin", "electro", "reggae", "tribal", "dark",
    "male opera", "no vocals", "irish", "electronica", "horn", "operatic", "arabic", "lol",
    "low", "instrumental", "trance", "chant", "strange", "drone", "synthesizer",
    "heavy metal", "modern", "disco", "bells", "man", "deep", "fast beat", "industrial",
    "hard", "harp", "no flute", "jungle", "pop", "lute", "female vocal", "oboe", "mellow",
    "orchestral", "viola", "light", "echo", "piano", "celtic", "male vocals", "orchestra",
    "eastern", "old", "flutes", "punk", "spanish", "sad", "sax", "slow", "male", "blues",
    "vocal", "indian", "no singer", "scary", "india", "woman", "woman singing", "rock",
    "dance", "piano solo", "guitars", "no drums", "jazzy", "singing", "cello", "calm",
    "female vocals", "voices", "different", "techno", "clapping", "house", "monks",
    "flute", "not opera", "not english", "oriental", "beat", "upbeat", "soft", "noise",
    "choir", "female singer", "rap", "metal", "hip hop", "quick", "water", "baroque",
    "women", "fiddle", "english",
]


def write_mtg_jamendo(path, rows) -> None:
    """An autotagging.tsv-style file: rows of (track number, artist number, duration,
    ["genre---rock", ...]); PATH as the dataset writes it (NN/number.mp3)."""
    lines = ["TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS"]
    for number, artist, duration, tags in rows:
        lines.append("\t".join([f"track_{number:07d}", f"artist_{artist:06d}",
                                f"album_{artist:06d}", f"{number % 100:02d}/{number}.mp3",
                                str(duration), *tags]))
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")  # the dataset's CRLF


def write_magnatagatune(path, rows, columns=MAGNATAGATUNE) -> None:
    """An annotations_final.csv-style file (tab-separated, quoted): rows of (clip id,
    mp3 path, tags set to 1)."""
    quote = '"{}"'.format
    lines = ["\t".join(quote(c) for c in ["clip_id", *columns, "mp3_path"])]
    for clip_id, mp3, tags in rows:
        unknown = set(tags) - set(columns)
        assert not unknown, unknown
        cells = [str(clip_id), *("1" if c in tags else "0" for c in columns), mp3]
        lines.append("\t".join(quote(c) for c in cells))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
