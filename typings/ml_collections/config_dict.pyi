from typing import Any

from ml_collections import ConfigDict as ConfigDict
from ml_collections import FieldReference as FieldReference
from ml_collections import FrozenConfigDict as FrozenConfigDict

def placeholder(field_type: Any, required: bool = ...) -> FieldReference: ...
def __getattr__(name: str) -> Any: ...
