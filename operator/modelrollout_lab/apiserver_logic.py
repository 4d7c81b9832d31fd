"""Pure (no I/O) helpers of the emulated API server: patches, selectors, schemas, tables.

Used by :mod:`modelrollout_lab.apiserver`; kept apart so they can be unit-tested
and reasoned about without the HTTP layer.
"""
from __future__ import annotations

import copy
import datetime
import re
from typing import Any

_MISSING = object()


# --------------------------------------------------------------------------------------------------
# Errors raised by the pure logic; the server turns them into Status objects.
# --------------------------------------------------------------------------------------------------
class PatchError(Exception):
    """A patch cannot be applied (maps to 422 for JSON patches, 400 for malformed bodies)."""

    def __init__(self, message: str, *, code: int = 422) -> None:
        super().__init__(message)
        self.code = code


class SelectorError(Exception):
    """A label/field selector cannot be parsed (maps to 400 BadRequest)."""


# --------------------------------------------------------------------------------------------------
# Patches.
# --------------------------------------------------------------------------------------------------
def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch. Returns a new value; neither argument is modified."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _unescape_pointer(token: str) -> str:
    return token.replace('~1', '/').replace('~0', '~')


def _pointer_tokens(pointer: str) -> list[str]:
    if pointer == '':
        return []
    if not pointer.startswith('/'):
        raise PatchError(f'invalid JSON pointer: {pointer!r}')
    return [_unescape_pointer(t) for t in pointer[1:].split('/')]


def _resolve_parent(doc: Any, tokens: list[str], pointer: str) -> tuple[Any, str]:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise PatchError(f'doc is missing path: "{pointer}": missing value')
            node = node[token]
        elif isinstance(node, list):
            try:
                node = node[int(token)]
            except (ValueError, IndexError):
                raise PatchError(f'doc is missing path: "{pointer}": missing value') from None
        else:
            raise PatchError(f'doc is missing path: "{pointer}": missing value')
    return node, tokens[-1]


def _get_pointer(doc: Any, pointer: str) -> Any:
    node = doc
    for token in _pointer_tokens(pointer):
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise PatchError(f'doc is missing path: "{pointer}": missing value')
    return node


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch. Returns a new document; a failed ``test`` raises PatchError."""
    if not isinstance(ops, list):
        raise PatchError('json patch must be a list of operations', code=400)
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or 'op' not in op:
            raise PatchError(f'invalid JSON patch operation: {op!r}', code=400)
        kind = op['op']
        path = op.get('path', '')
        if kind == 'test':
            try:
                actual = _get_pointer(doc, path)
            except PatchError:
                actual = _MISSING
            if actual is _MISSING or actual != op.get('value'):
                raise PatchError(f'testing value {path} failed: test failed')
            continue
        if kind in ('move', 'copy'):
            value = _get_pointer(doc, op.get('from', ''))
            value = copy.deepcopy(value)
            if kind == 'move':
                doc = json_patch(doc, [{'op': 'remove', 'path': op['from']}])
            doc = json_patch(doc, [{'op': 'add', 'path': path, 'value': value}])
            continue
        tokens = _pointer_tokens(path)
        if not tokens:
            if kind in ('add', 'replace'):
                doc = copy.deepcopy(op.get('value'))
                continue
            raise PatchError(f'cannot {kind} the whole document')
        parent, key = _resolve_parent(doc, tokens, path)
        if kind == 'add':
            value = copy.deepcopy(op.get('value'))
            if isinstance(parent, dict):
                parent[key] = value
            elif isinstance(parent, list):
                if key == '-':
                    parent.append(value)
                else:
                    try:
                        index = int(key)
                    except ValueError:
                        raise PatchError(f'invalid array index in "{path}"') from None
                    if index < 0 or index > len(parent):
                        raise PatchError(f'add operation does not apply: doc is missing path: "{path}": missing value')
                    parent.insert(index, value)
            else:
                raise PatchError(f'add operation does not apply: doc is missing path: "{path}": missing value')
        elif kind in ('remove', 'replace'):
            if isinstance(parent, dict):
                if key not in parent:
                    raise PatchError(f'{kind} operation does not apply: doc is missing key: {path}: missing value')
                if kind == 'remove':
                    del parent[key]
                else:
                    parent[key] = copy.deepcopy(op.get('value'))
            elif isinstance(parent, list):
                try:
                    index = int(key)
                    parent[index]  # noqa: B018  # bounds check
                except (ValueError, IndexError):
                    raise PatchError(f'{kind} operation does not apply: doc is missing path: {path}: missing value') from None
                if kind == 'remove':
                    del parent[index]
                else:
                    parent[index] = copy.deepcopy(op.get('value'))
            else:
                raise PatchError(f'{kind} operation does not apply: doc is missing path: {path}')
        else:
            raise PatchError(f'Unexpected kind: {kind}', code=400)
    return doc


# Merge keys of the lists that kubectl & clients patch strategically (a subset of the k8s schemas).
_SMP_MERGE_KEYS: dict[str, tuple[str, ...]] = {
    'containers': ('name',),
    'initContainers': ('name',),
    'ephemeralContainers': ('name',),
    'env': ('name',),
    'volumes': ('name',),
    'imagePullSecrets': ('name',),
    'volumeMounts': ('mountPath',),
    'volumeDevices': ('devicePath',),
    'ports': ('containerPort', 'port'),
    'conditions': ('type',),
    'tolerations': ('key',),
    'hostAliases': ('ip',),
    'topologySpreadConstraints': ('topologyKey',),
    'ownerReferences': ('uid',),
}
# Lists of primitives merged as sets.
_SMP_SET_LISTS = {'finalizers'}


def _smp_key_of(field: str, items: list[Any]) -> str | None:
    for candidate in _SMP_MERGE_KEYS.get(field, ()):
        if all(isinstance(i, dict) and candidate in i for i in items if isinstance(i, dict)):
            if any(isinstance(i, dict) and candidate in i for i in items):
                return candidate
    return None


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """
    A practical subset of Kubernetes' strategic merge patch.

    Dicts merge as in a merge patch (``null`` deletes); lists of objects with a known merge key
    (``name`` for containers/env/volumes, ``containerPort``/``port`` for ports, ``type`` for
    conditions, ...) are merged by key, honouring ``$patch: delete|replace`` items; other lists
    are replaced. ``$setElementOrder/…``, ``$retainKeys``, ``$deleteFromPrimitiveList/…``
    directives (sent by kubectl) are understood or ignored.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get('$patch') == 'replace':
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != '$patch'}
    if patch.get('$patch') == 'delete':
        return None
    result = dict(target) if isinstance(target, dict) else {}
    retain = patch.get('$retainKeys')
    for key, value in patch.items():
        if key.startswith('$setElementOrder/') or key in ('$retainKeys', '$patch'):
            continue
        if key.startswith('$deleteFromPrimitiveList/'):
            field = key.split('/', 1)[1]
            if isinstance(result.get(field), list) and isinstance(value, list):
                result[field] = [v for v in result[field] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _smp_list(key, result.get(key), value)
        else:
            merged = strategic_merge_patch(result.get(key), value)
            if merged is None and isinstance(value, dict) and value.get('$patch') == 'delete':
                result.pop(key, None)
            else:
                result[key] = merged
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _smp_list(field: str, current: Any, patch: list[Any]) -> list[Any]:
    current = current if isinstance(current, list) else []
    if field in _SMP_SET_LISTS:
        merged = list(current)
        for item in patch:
            if item not in merged:
                merged.append(item)
        return merged
    mkey = _smp_key_of(field, patch + current)
    if mkey is None or not all(isinstance(i, dict) for i in patch):
        return [copy.deepcopy(i) for i in patch if not (isinstance(i, dict) and i.get('$patch'))]
    if any(isinstance(i, dict) and i.get('$patch') == 'replace' for i in patch):
        return [copy.deepcopy(i) for i in patch if not i.get('$patch')]
    result = list(current)
    for item in patch:
        keyval = item.get(mkey)
        index = next((n for n, c in enumerate(result) if isinstance(c, dict) and c.get(mkey) == keyval), None)
        if item.get('$patch') == 'delete':
            if index is not None:
                del result[index]
            continue
        if index is None:
            result.append(strategic_merge_patch({}, item))
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result


# --------------------------------------------------------------------------------------------------
# Selectors.
# --------------------------------------------------------------------------------------------------
_SET_RE = re.compile(r'^\s*(!?)\s*([A-Za-z0-9_./-]+)\s+(in|notin)\s+\((.*)\)\s*$')
_EQ_RE = re.compile(r'^\s*([A-Za-z0-9_./-]+)\s*(==|!=|=)\s*([A-Za-z0-9_.-]*)\s*$')
_EXISTS_RE = re.compile(r'^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*$')


def _split_selector(text: str) -> list[str]:
    parts, depth, buf = [], 0, ''
    for ch in text:
        if ch == '(':
            depth += 1
        elif ch == ')':
            depth -= 1
        if ch == ',' and depth == 0:
            parts.append(buf)
            buf = ''
        else:
            buf += ch
    if buf.strip():
        parts.append(buf)
    return [p for p in parts if p.strip()]


def parse_label_selector(text: str | None) -> list[tuple[str, str, Any]]:
    """Parse ``a=b,c!=d,e in (f,g),h notin (i),j,!k`` into (key, op, value) requirements."""
    reqs: list[tuple[str, str, Any]] = []
    for part in _split_selector(text or ''):
        if m := _SET_RE.match(part):
            values = {v.strip() for v in m.group(4).split(',') if v.strip()}
            reqs.append((m.group(2), m.group(3), values))
        elif m := _EQ_RE.match(part):
            reqs.append((m.group(1), '!=' if m.group(2) == '!=' else '=', m.group(3)))
        elif m := _EXISTS_RE.match(part):
            reqs.append((m.group(2), '!' if m.group(1) else 'exists', None))
        else:
            raise SelectorError(f'unable to parse requirement: {part!r}')
    return reqs


def match_labels(reqs: list[tuple[str, str, Any]], labels: dict[str, str] | None) -> bool:
    labels = labels or {}
    for key, op, value in reqs:
        if op == '=' and labels.get(key) != value:
            return False
        if op == '!=' and key in labels and labels[key] == value:
            return False
        if op == 'in' and labels.get(key) not in value:
            return False
        if op == 'notin' and key in labels and labels[key] in value:
            return False
        if op == 'exists' and key not in labels:
            return False
        if op == '!' and key in labels:
            return False
    return True


def parse_field_selector(text: str | None) -> list[tuple[str, bool, str]]:
    """Parse ``metadata.name=x,metadata.namespace!=y`` into (field, equal?, value)."""
    reqs: list[tuple[str, bool, str]] = []
    for part in _split_selector(text or ''):
        m = re.match(r'^\s*([A-Za-z0-9_.]+)\s*(==|!=|=)\s*(.*?)\s*$', part)
        if not m:
            raise SelectorError(f'invalid selector: {part!r}; can\'t understand {part!r}')
        reqs.append((m.group(1), m.group(2) != '!=', m.group(3)))
    return reqs


def match_fields(reqs: list[tuple[str, bool, str]], obj: dict[str, Any]) -> bool:
    for field, equal, value in reqs:
        node: Any = obj
        for part in field.split('.'):
            node = node.get(part) if isinstance(node, dict) else None
        actual = '' if node is None else str(node)
        if (actual == value) != equal:
            return False
    return True


# --------------------------------------------------------------------------------------------------
# Structural schemas: pruning, defaulting, validation (as kube-apiserver does for CRDs).
# --------------------------------------------------------------------------------------------------
def _typename(value: Any) -> str:
    if value is None:
        return 'null'
    if isinstance(value, bool):
        return 'boolean'
    if isinstance(value, int):
        return 'integer'
    if isinstance(value, float):
        return 'number'
    if isinstance(value, str):
        return 'string'
    if isinstance(value, list):
        return 'array'
    return 'object'


def prune_and_default(value: Any, schema: dict[str, Any] | None, path: str, dropped: list[str],
                      *, root: bool = False) -> Any:
    """
    Prune fields the schema does not declare, drop non-nullable nulls, apply ``default``s.

    Returns the new value (inputs are not modified); ``dropped`` collects the pruned paths
    (used for ``fieldValidation=Strict``).
    """
    if schema is None:
        return value
    if isinstance(value, dict) and not schema.get('x-kubernetes-int-or-string'):
        props: dict[str, Any] = schema.get('properties') or {}
        addl = schema.get('additionalProperties')
        preserve = bool(schema.get('x-kubernetes-preserve-unknown-fields'))
        result: dict[str, Any] = {}
        for key, sub in value.items():
            subpath = f'{path}.{key}' if path else key
            if root and key in ('apiVersion', 'kind', 'metadata'):
                result[key] = sub
                continue
            if key in props:
                subschema = props[key]
            elif isinstance(addl, dict):
                subschema = addl
            elif preserve or addl is True:
                result[key] = sub
                continue
            else:
                dropped.append(subpath)
                continue
            if sub is None and not subschema.get('nullable'):
                if 'default' not in subschema:
                    continue  # nulls of non-nullable fields are pruned (and then defaulted)
                sub = _MISSING
            if sub is _MISSING:
                continue
            result[key] = prune_and_default(sub, subschema, subpath, dropped)
        for key, subschema in props.items():
            if key not in result and isinstance(subschema, dict) and 'default' in subschema:
                if root and key in ('apiVersion', 'kind', 'metadata'):
                    continue
                subpath = f'{path}.{key}' if path else key
                result[key] = prune_and_default(copy.deepcopy(subschema['default']), subschema, subpath, [])
        return result
    if isinstance(value, list):
        items = schema.get('items')
        if isinstance(items, dict):
            return [prune_and_default(v, items, f'{path}[{i}]', dropped) for i, v in enumerate(value)]
        return value
    return value


def _fmt(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace('\\', '\\\\').replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if value is None:
        return 'null'
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dict, list)):
        return '"' + _typename(value) + '"'
    return str(value)


def validate(value: Any, schema: dict[str, Any] | None, path: str = '', *, root: bool = False) -> list[dict[str, str]]:
    """Validate against a structural schema; returns kube-style causes {reason, message, field}."""
    causes: list[dict[str, str]] = []
    if schema is not None:
        _validate(value, schema, path, causes, root=root)
    return causes


def _cause(causes: list[dict[str, str]], reason: str, field: str, message: str) -> None:
    causes.append({'reason': reason, 'message': message, 'field': field})


def _validate(value: Any, schema: dict[str, Any], path: str, causes: list[dict[str, str]], *, root: bool = False) -> None:
    field = path or '<root>'
    if value is None:
        if not schema.get('nullable'):
            _cause(causes, 'FieldValueTypeInvalid', field,
                   f'Invalid value: "null": {field} in body must be of type {schema.get("type", "object")}: "null"')
        return
    expected = schema.get('type')
    if schema.get('x-kubernetes-int-or-string'):
        if not (isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))):
            _cause(causes, 'FieldValueTypeInvalid', field,
                   f'Invalid value: "{_typename(value)}": {field} in body must be of type integer,string: "{_typename(value)}"')
            return
    elif expected:
        actual = _typename(value)
        ok = (actual == expected or (expected == 'number' and actual == 'integer')
              or (expected == 'integer' and actual == 'number' and float(value).is_integer()))
        if not ok:
            _cause(causes, 'FieldValueTypeInvalid', field,
                   f'Invalid value: "{actual}": {field} in body must be of type {expected}: "{actual}"')
            return
    if 'enum' in schema and value not in schema['enum']:
        supported = ', '.join(_fmt(v) for v in schema['enum'])
        _cause(causes, 'FieldValueNotSupported', field,
               f'Unsupported value: {_fmt(value)}: supported values: {supported}')
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if 'maximum' in schema:
            mx = schema['maximum']
            if schema.get('exclusiveMaximum') is True and value >= mx:
                _cause(causes, 'FieldValueInvalid', field,
                       f'Invalid value: {_fmt(value)}: {field} in body should be less than {_fmt(mx)}')
            elif value > mx:
                _cause(causes, 'FieldValueInvalid', field,
                       f'Invalid value: {_fmt(value)}: {field} in body should be less than or equal to {_fmt(mx)}')
        if 'minimum' in schema:
            mn = schema['minimum']
            if schema.get('exclusiveMinimum') is True and value <= mn:
                _cause(causes, 'FieldValueInvalid', field,
                       f'Invalid value: {_fmt(value)}: {field} in body should be greater than {_fmt(mn)}')
            elif value < mn:
                _cause(causes, 'FieldValueInvalid', field,
                       f'Invalid value: {_fmt(value)}: {field} in body should be greater than or equal to {_fmt(mn)}')
        if 'multipleOf' in schema and schema['multipleOf'] and (value / schema['multipleOf']) % 1:
            _cause(causes, 'FieldValueInvalid', field,
                   f'Invalid value: {_fmt(value)}: {field} in body should be a multiple of {_fmt(schema["multipleOf"])}')
    if isinstance(value, str):
        if 'minLength' in schema and len(value) < schema['minLength']:
            _cause(causes, 'FieldValueInvalid', field,
                   f'Invalid value: {_fmt(value)}: {field} in body should be at least {schema["minLength"]} chars long')
        if 'maxLength' in schema and len(value) > schema['maxLength']:
            _cause(causes, 'FieldValueTooLong', field,
                   f'Too long: may not be more than {schema["maxLength"]} bytes')
        if 'pattern' in schema and not re.search(schema['pattern'], value):
            _cause(causes, 'FieldValueInvalid', field,
                   f"Invalid value: {_fmt(value)}: {field} in body should match '{schema['pattern']}'")
    if isinstance(value, list):
        if 'minItems' in schema and len(value) < schema['minItems']:
            _cause(causes, 'FieldValueInvalid', field,
                   f'Invalid value: {len(value)}: {field} in body should have at least {schema["minItems"]} items')
        if 'maxItems' in schema and len(value) > schema['maxItems']:
            _cause(causes, 'FieldValueTooMany', field,
                   f'Too many: {len(value)}: must have at most {schema["maxItems"]} items')
        items = schema.get('items')
        if isinstance(items, dict):
            for i, item in enumerate(value):
                _validate(item, items, f'{path}[{i}]', causes)
    if isinstance(value, dict) and not schema.get('x-kubernetes-int-or-string'):
        if 'minProperties' in schema and len(value) < schema['minProperties']:
            _cause(causes, 'FieldValueInvalid', field,
                   f'Invalid value: {len(value)}: {field} in body should have at least {schema["minProperties"]} properties')
        if 'maxProperties' in schema and len(value) > schema['maxProperties']:
            _cause(causes, 'FieldValueTooMany', field,
                   f'Too many: {len(value)}: must have at most {schema["maxProperties"]} items')
        for key in schema.get('required') or ():
            if key not in value:
                subpath = f'{path}.{key}' if path else key
                _cause(causes, 'FieldValueRequired', subpath, 'Required value')
        props = schema.get('properties') or {}
        addl = schema.get('additionalProperties')
        for key, sub in value.items():
            if root and key in ('apiVersion', 'kind', 'metadata'):
                continue
            subpath = f'{path}.{key}' if path else key
            if key in props:
                _validate(sub, props[key], subpath, causes)
            elif isinstance(addl, dict):
                _validate(sub, addl, subpath, causes)


# --------------------------------------------------------------------------------------------------
# Tables (kubectl get) and time.
# --------------------------------------------------------------------------------------------------
def now_rfc3339() -> str:
    return datetime.datetime.now(tz=datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def parse_rfc3339(text: str) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(text.replace('Z', '+00:00'))
    except (ValueError, AttributeError, TypeError):
        return None


def human_duration(seconds_f: float) -> str:
    """The same as k8s.io/apimachinery/pkg/util/duration.HumanDuration (used for AGE cells)."""
    seconds = int(seconds_f)
    if seconds < -1:
        return '<invalid>'
    if seconds < 0:
        return '0s'
    if seconds < 60 * 2:
        return f'{seconds}s'
    minutes = seconds // 60
    if minutes < 10:
        s = seconds % 60
        return f'{minutes}m' if s == 0 else f'{minutes}m{s}s'
    if minutes < 60 * 3:
        return f'{minutes}m'
    hours = seconds // 3600
    if hours < 8:
        m = minutes % 60
        return f'{hours}h' if m == 0 else f'{hours}h{m}m'
    if hours < 48:
        return f'{hours}h'
    if hours < 24 * 8:
        h = hours % 24
        return f'{hours // 24}d' if h == 0 else f'{hours // 24}d{h}h'
    if hours < 24 * 365 * 2:
        return f'{hours // 24}d'
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        return f'{hours // 24 // 365}y' if dy == 0 else f'{hours // 24 // 365}y{dy}d'
    return f'{hours // 24 // 365}y'


def simple_jsonpath(obj: Any, path: str) -> Any:
    """Evaluate the simple JSONPaths of printer columns: ``.status.phase``, ``.spec.items[0].x``."""
    path = path.strip()
    if path.startswith('{') and path.endswith('}'):
        path = path[1:-1]
    node = obj
    for part in re.findall(r'\.([^.\[\]]+)|\[(\d+)\]', path):
        key, index = part
        if key:
            node = node.get(key) if isinstance(node, dict) else None
        else:
            node = node[int(index)] if isinstance(node, list) and int(index) < len(node) else None
        if node is None:
            return None
    return node


def table_cell(value: Any, coltype: str) -> Any:
    if value is None:
        return None
    if coltype == 'date':
        ts = parse_rfc3339(value) if isinstance(value, str) else None
        if ts is None:
            return '<unknown>'
        age = (datetime.datetime.now(tz=datetime.timezone.utc) - ts).total_seconds()
        return human_duration(age)
    if coltype in ('integer', 'number', 'boolean') and isinstance(value, (int, float, bool)):
        return value
    if isinstance(value, (dict, list)):
        import json
        return json.dumps(value, separators=(',', ':'))
    return str(value) if not isinstance(value, (int, float, bool)) else value
