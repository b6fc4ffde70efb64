"""The cache: one joblib.Memory per level, named key components, codecs per artifact."""

from .fingerprint import Fingerprint as Fingerprint
from .fingerprint import Fingerprinter as Fingerprinter
from .fingerprint import fingerprint_function as fingerprint_function
from .fingerprint import register_fingerprinter as register_fingerprinter
from .jaxpr_codec import JaxprCodecError as JaxprCodecError
from .jaxpr_codec import decode_jaxpr as decode_jaxpr
from .jaxpr_codec import encode_jaxpr as encode_jaxpr
from .keys import KeyComponents as KeyComponents
from .store import LEVELS as LEVELS
from .store import CacheStore as CacheStore
from .store import CacheWarning as CacheWarning
from .store import default_store as default_store
