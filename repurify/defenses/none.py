"""The undefended classifier: the identity purifier, every table's reference row."""

from __future__ import annotations

from typing import Literal

from repurify.defenses.base import Identity
from repurify.defenses.registry import PurifierDef
from repurify.schema import Strict


class NoneSpec(Strict):
    kind: Literal["none"]


# an honest identity: the instrument must not detect masking where there is none
PURIFIER = PurifierDef(kind="none", spec=NoneSpec, purifier=Identity, build=lambda spec, ctx: Identity(),
                       example={"kind": "none"}, known_answer="not detected")
