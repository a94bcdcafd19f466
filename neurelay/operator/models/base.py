"""What every custom resource model shares: the camelCase base model and the `reuse` helper.

Fields that mean the same thing as a gateway setting are copied from
`neurelay.config` with `reuse`, so bounds, defaults and descriptions have a
single source of truth; `immutable` marks a field that cannot change after
creation (a CEL rule the API server enforces).
"""

from __future__ import annotations

import copy
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

from neurelay import __version__

DEFAULT_IMAGE = f"ghcr.io/neurectomy/neurelay:{__version__}"
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
NAMESPACE_PATTERN = r"^[a-z][a-z0-9-]{0,31}$"
DEFAULT_REQUESTS: dict[str, int | str] = {"cpu": "100m", "memory": "128Mi"}
DEFAULT_LIMITS: dict[str, int | str] = {"memory": "512Mi"}


def reuse(model: type[BaseModel], name: str, *, description: str | None = None) -> Any:
    """A copy of `model`'s field `name` (default, bounds, description) for use in a spec.

    `description` is used only while the source field has none. The unit
    tests check that reused annotations equal the source's.
    """
    info = copy.deepcopy(model.model_fields[name])
    if info.description is None:
        info.description = description
    return info


def immutable(message: str) -> dict[str, Any]:
    """json_schema_extra of a field that cannot change after creation."""
    return {"x-kubernetes-validations": [{"rule": "self == oldSelf", "message": message}]}


# Kubernetes' own resource.Quantity pattern: a quantity the API server refuses in a
# Deployment is refused here, at admission, not by every later apply of the Deployment.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


def _quantity(value: int | str) -> int | str:
    if isinstance(value, str) and re.fullmatch(QUANTITY_PATTERN, value) is None:
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 500m, 2, 512Mi)")
    return value


Quantity = Annotated[
    int | str,
    AfterValidator(_quantity),
    WithJsonSchema({"x-kubernetes-int-or-string": True, "pattern": QUANTITY_PATTERN}),
]


class SpecModel(BaseModel):
    """Base of every model of the custom resources: camelCase in Kubernetes, frozen."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        extra="ignore",
    )


class SecretKeyRef(SpecModel):
    """A key of a Secret in the same Kubernetes namespace as the resource."""

    name: str = Field(
        min_length=1, max_length=253, pattern=NAME_PATTERN, description="Name of the Secret."
    )
    key: str = Field(min_length=1, max_length=253, description="Key within the Secret.")
