"""The package exports the names the rest of the service is written against."""

from __future__ import annotations

import crdt
from crdt import codec, errors, gcounter, pncounter

EXPORTS = {
    "GCounter": gcounter.GCounter,
    "PNCounter": pncounter.PNCounter,
    "CrdtError": errors.CrdtError,
    "CounterOverflowError": errors.CounterOverflowError,
    "CodecError": errors.CodecError,
    "SlotFullError": errors.SlotFullError,
    "saturate": pncounter.saturate,
    "encode": codec.encode,
    "decode": codec.decode,
    "encode_batch": codec.encode_batch,
    "decode_batch": codec.decode_batch,
    "pn_to_wire": codec.pn_to_wire,
    "pn_from_wire": codec.pn_from_wire,
    "key_to_wire": codec.key_to_wire,
    "key_from_wire": codec.key_from_wire,
}


def test_package_reexports_the_public_api() -> None:
    assert getattr(crdt, "__file__", None), (
        f"`crdt` was imported as a namespace package ({crdt.__path__}), so crdt/__init__.py "
        "never ran: the editable install predates it. Reinstall (pip install -e .) or run "
        "`python -m pytest` from the repo root."
    )
    assert set(crdt.__all__) == set(EXPORTS)
    for name, obj in EXPORTS.items():
        assert getattr(crdt, name) is obj, name


def test_errors_share_one_root_and_are_value_errors() -> None:
    for error in (errors.CounterOverflowError, errors.SlotFullError, errors.CodecError):
        assert issubclass(error, errors.CrdtError)
        assert issubclass(error, ValueError)
