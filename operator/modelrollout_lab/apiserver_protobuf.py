"""
A tiny decoder of Kubernetes' protobuf request bodies for a few built-in kinds.

Typed client-go clients (``kubectl create namespace|configmap|secret``) send
``application/vnd.kubernetes.protobuf`` bodies. We decode just the kinds listed
in ``SCHEMAS`` into JSON-like dicts; other kinds get 415 (clients using
unstructured JSON, e.g. ``kubectl apply``, are unaffected).
"""
from __future__ import annotations

import base64
import datetime
from typing import Any

MAGIC = b'k8s\x00'

_OWNER_REF = {1: ('kind', 'str'), 3: ('name', 'str'), 4: ('uid', 'str'), 5: ('apiVersion', 'str'),
              6: ('controller', 'bool'), 7: ('blockOwnerDeletion', 'bool')}
_OBJECT_META = {
    1: ('name', 'str'), 2: ('generateName', 'str'), 3: ('namespace', 'str'), 5: ('uid', 'str'),
    6: ('resourceVersion', 'str'), 7: ('generation', 'int'), 11: ('labels', 'map'),
    12: ('annotations', 'map'), 13: ('ownerReferences', [_OWNER_REF]), 14: ('finalizers', ['str']),
}
SCHEMAS: dict[tuple[str, str], dict[int, Any]] = {
    ('v1', 'Namespace'): {1: ('metadata', _OBJECT_META), 2: ('spec', {1: ('finalizers', ['str'])})},
    ('v1', 'ConfigMap'): {1: ('metadata', _OBJECT_META), 2: ('data', 'map'), 3: ('binaryData', 'mapbytes'),
                          4: ('immutable', 'bool')},
    ('v1', 'Secret'): {1: ('metadata', _OBJECT_META), 2: ('data', 'mapbytes'), 3: ('type', 'str'),
                       4: ('stringData', 'map'), 5: ('immutable', 'bool')},
    # kubectl auth can-i / kubectl auth whoami (answered by modelrollout_lab.rbac).
    ('authorization.k8s.io/v1', 'SelfSubjectAccessReview'): {1: ('metadata', _OBJECT_META), 2: ('spec', {
        1: ('resourceAttributes', {1: ('namespace', 'str'), 2: ('verb', 'str'), 3: ('group', 'str'),
                                   4: ('version', 'str'), 5: ('resource', 'str'), 6: ('subresource', 'str'),
                                   7: ('name', 'str')}),
        2: ('nonResourceAttributes', {1: ('path', 'str'), 2: ('verb', 'str')})})},
    ('authentication.k8s.io/v1', 'SelfSubjectReview'): {1: ('metadata', _OBJECT_META)},
}


class UnsupportedProtobuf(Exception):
    pass


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int, Any]]:
    out, pos = [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = _varint(buf, pos)
        elif wire == 1:
            val, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            val, pos = buf[pos:pos + size], pos + size
        elif wire == 5:
            val, pos = buf[pos:pos + 4], pos + 4
        else:
            raise UnsupportedProtobuf(f'unsupported wire type {wire}')
        out.append((num, wire, val))
    return out


def _scalar(kind: str, val: Any) -> Any:
    if kind == 'str':
        return val.decode()
    if kind == 'int':
        return val
    if kind == 'bool':
        return bool(val)
    if kind == 'time':
        secs = dict((n, v) for n, _, v in _fields(val)).get(1, 0)
        return datetime.datetime.fromtimestamp(secs, tz=datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')
    raise UnsupportedProtobuf(kind)


def _message(buf: bytes, schema: dict[int, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for num, _, val in _fields(buf):
        if num not in schema:
            continue  # unknown fields are ignored, as a lenient decoder would
        name, kind = schema[num]
        if isinstance(kind, list):
            item = kind[0]
            result.setdefault(name, []).append(_message(val, item) if isinstance(item, dict) else _scalar(item, val))
        elif isinstance(kind, dict):
            result[name] = _message(val, kind)
        elif kind in ('map', 'mapbytes'):
            entry = {n: v for n, _, v in _fields(val)}
            key = entry.get(1, b'').decode()
            raw = entry.get(2, b'')
            result.setdefault(name, {})[key] = base64.b64encode(raw).decode() if kind == 'mapbytes' else raw.decode()
        else:
            result[name] = _scalar(kind, val)
    return {k: v for k, v in result.items() if v not in ('', 0, False, None) or k in ('data', 'binaryData')}


def decode(body: bytes) -> dict[str, Any]:
    """Decode a ``k8s\\x00``-framed runtime.Unknown into a JSON-like object."""
    if not body.startswith(MAGIC):
        raise UnsupportedProtobuf('no k8s protobuf magic')
    envelope = {num: val for num, _, val in _fields(body[len(MAGIC):])}
    type_meta = {num: val.decode() for num, _, val in _fields(envelope.get(1, b''))}
    api_version, kind = type_meta.get(1, ''), type_meta.get(2, '')
    schema = SCHEMAS.get((api_version, kind))
    if schema is None:
        raise UnsupportedProtobuf(f'protobuf bodies of {api_version}/{kind} are not supported')
    obj = _message(envelope.get(2, b''), schema)
    return {'apiVersion': api_version, 'kind': kind, **obj}
