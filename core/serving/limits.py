"""The limits `crs chat` and `crs serve` share, in one place; torch-free, so the CLI reads them cheaply."""

MAX_CHARS = 500  # longest accepted utterance, in characters (after clean-up)
REPLY_TOKENS = 20  # longest generated reply, in tokens (default)
MAX_REPLY_TOKENS = 200  # the most --reply-tokens accepts
TOP_N = 5  # recommendations shown per turn (default)
MAX_TOP_N = 50  # the most a turn may ask for (/recs N, --recs, the API's top_n)
