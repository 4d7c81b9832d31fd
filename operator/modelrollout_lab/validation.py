"""What kube-apiserver refuses, for the kinds the lab serves (no I/O: schemas are package data).

kube-apiserver checks a write in two stages, and so does the lab:

1. Decoding into the Go type: a value of the wrong JSON type, or a number out of an int32/int64
   field's range, is a 400 BadRequest (``json: cannot unmarshal ...``), before any validation.
   Unknown fields are a 400 with ``fieldValidation=Strict`` (kubectl's default) and dropped
   otherwise. The lab checks built-in kinds against the JSON schemas that ``kubernetes-validate``
   ships for the server's version.
2. Validation: a 422 Invalid whose ``details.causes[]`` name each field. Required fields and
   enums come from the same schemas; names, labels, annotations, replica counts and ports are
   checked as kube's validation code does (messages worded as kube 1.31 words them).

Gateway API objects: no PyPI package ships their CRD schemas, so HTTPRoute is checked against
the part of the published v1 schema that the operator and the lab touch (``HTTPROUTE_SCHEMA``).
Custom resources served from a CRD are validated by the server against the CRD's own schema;
this module adds the metadata rules every object gets.
"""
from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any, Protocol

import jsonschema
import referencing

from modelrollout_lab import apiserver_logic as logic

__all__ = ['DecodeError', 'admit', 'HTTPROUTE_SCHEMA', 'KUBE_SCHEMA_VERSION', 'TOTAL_ANNOTATION_BYTES']

KUBE_SCHEMA_VERSION = '1.31.0'  # the emulated server says v1.31.0
TOTAL_ANNOTATION_BYTES = 256 * 1024
DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
LABEL_VALUE_MAX = 63

Cause = dict[str, str]

_DNS1123_LABEL = '[a-z0-9]([-a-z0-9]*[a-z0-9])?'
_DNS1123_SUBDOMAIN = _DNS1123_LABEL + r'(\.' + _DNS1123_LABEL + ')*'
_DNS1035_LABEL = '[a-z]([-a-z0-9]*[a-z0-9])?'
_QUALIFIED_NAME = '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]'
_LABEL_VALUE = '(' + _QUALIFIED_NAME + ')?'
_IANA_SVC_NAME = '[-a-z0-9]*[a-z][-a-z0-9]*'

_ERR_DNS1123_LABEL = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
                      "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
                      f"validation is '{_DNS1123_LABEL}')")
_ERR_DNS1123_SUBDOMAIN = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
                          "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
                          f"for validation is '{_DNS1123_SUBDOMAIN}')")
_ERR_DNS1035_LABEL = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
                      "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
                      f"regex used for validation is '{_DNS1035_LABEL}')")
_ERR_QUALIFIED_NAME = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
                       "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
                       f"validation is '{_QUALIFIED_NAME}')")
_ERR_LABEL_VALUE = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
                    "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
                    f"'12345', regex used for validation is '{_LABEL_VALUE}')")


class DecodeError(Exception):
    """The body cannot be decoded into the kind's Go type: kube answers 400 BadRequest."""


class _Resource(Protocol):
    group: str
    version: str
    kind: str
    crd: str | None


# --------------------------------------------------------------------------------------------------
# The entry point.
# --------------------------------------------------------------------------------------------------
def admit(rdef: _Resource, obj: dict[str, Any], *, strict: bool = False) -> tuple[dict[str, Any], list[Cause]]:
    """Decode-check and validate ``obj`` as kube-apiserver would.

    Returns the object to keep going with (unknown fields of built-in kinds dropped unless
    ``strict``) and the 422 causes (empty when valid). Raises DecodeError for a 400.
    """
    causes: list[Cause] = []
    schema = None if rdef.crd else _kind_validator(rdef.group, rdef.version, rdef.kind)
    if schema is not None:
        obj, causes = _check_schema(schema, rdef.kind, rdef.version, obj, strict=strict)
    meta = obj.get('metadata') or {}
    causes += _name_causes(rdef.group, rdef.kind, meta.get('name') or '')
    causes += label_causes(meta.get('labels'), 'metadata.labels')
    causes += annotation_causes(meta.get('annotations'), 'metadata.annotations')
    kind_rules = _KIND_RULES.get((rdef.group, rdef.kind))
    if kind_rules is not None:
        causes += kind_rules(obj)
    return obj, causes


# --------------------------------------------------------------------------------------------------
# Names, labels, annotations (apimachinery's validation).
# --------------------------------------------------------------------------------------------------
def dns1123_label(value: str) -> list[str]:
    errors = [] if len(value) <= DNS1123_LABEL_MAX else [f'must be no more than {DNS1123_LABEL_MAX} characters']
    return errors + ([] if re.fullmatch(_DNS1123_LABEL, value) else [_ERR_DNS1123_LABEL])


def dns1123_subdomain(value: str) -> list[str]:
    errors = [] if len(value) <= DNS1123_SUBDOMAIN_MAX else [f'must be no more than {DNS1123_SUBDOMAIN_MAX} characters']
    return errors + ([] if re.fullmatch(_DNS1123_SUBDOMAIN, value) else [_ERR_DNS1123_SUBDOMAIN])


def dns1035_label(value: str) -> list[str]:
    errors = [] if len(value) <= DNS1123_LABEL_MAX else [f'must be no more than {DNS1123_LABEL_MAX} characters']
    return errors + ([] if re.fullmatch(_DNS1035_LABEL, value) else [_ERR_DNS1035_LABEL])


def qualified_name(value: str) -> list[str]:
    """A label or annotation key: an optional DNS subdomain prefix and '/', then a name of at most 63."""
    prefix, slash, name = value.rpartition('/')
    errors = []
    if slash:
        if not prefix:
            errors.append('prefix part must be non-empty')
        else:
            errors += [f'prefix part {e}' for e in dns1123_subdomain(prefix)]
    if not name:
        errors.append('name part must be non-empty')
    else:
        if len(name) > LABEL_VALUE_MAX:
            errors.append(f'name part must be no more than {LABEL_VALUE_MAX} characters')
        if not re.fullmatch(_QUALIFIED_NAME, name):
            errors.append(_ERR_QUALIFIED_NAME)
    return errors


def label_value(value: str) -> list[str]:
    errors = [] if len(value) <= LABEL_VALUE_MAX else [f'must be no more than {LABEL_VALUE_MAX} characters']
    return errors + ([] if re.fullmatch(_LABEL_VALUE, value) else [_ERR_LABEL_VALUE])


def _invalid(field: str, value: Any, message: str) -> Cause:
    return {'reason': 'FieldValueInvalid', 'field': field, 'message': f'Invalid value: {logic._fmt(value)}: {message}'}


def _required(field: str, detail: str = '') -> Cause:
    return {'reason': 'FieldValueRequired', 'field': field, 'message': 'Required value' + (f': {detail}' if detail else '')}


def _not_supported(field: str, value: Any, supported: list[str]) -> Cause:
    return {'reason': 'FieldValueNotSupported', 'field': field,
            'message': f'Unsupported value: {logic._fmt(value)}: supported values: '
                       + ', '.join(logic._fmt(s) for s in supported)}


def label_causes(labels: Any, field: str) -> list[Cause]:
    causes = []
    for key, value in (labels or {}).items() if isinstance(labels, dict) else ():
        causes += [_invalid(field, key, m) for m in qualified_name(str(key))]
        if isinstance(value, str):
            causes += [_invalid(field, value, m) for m in label_value(value)]
    return causes


def annotation_causes(annotations: Any, field: str) -> list[Cause]:
    if not isinstance(annotations, dict):
        return []
    causes = []
    total = 0
    for key, value in annotations.items():
        causes += [_invalid(field, key, m) for m in qualified_name(str(key))]
        total += len(str(key).encode()) + len(str(value).encode())
    if total > TOTAL_ANNOTATION_BYTES:
        causes.append({'reason': 'FieldValueTooLong', 'field': field,
                       'message': f'Too long: must have at most {TOTAL_ANNOTATION_BYTES} bytes'})
    return causes


# Kinds whose names become DNS labels (Services: the DNS name; Namespaces); the rest are subdomains.
_NAME_RULES = {('', 'Service'): dns1035_label, ('', 'Namespace'): dns1123_label}


def _name_causes(group: str, kind: str, name: str) -> list[Cause]:
    if not name or kind == 'CustomResourceDefinition':  # a missing name and CRD names: the server's own checks
        return []
    rule = _NAME_RULES.get((group, kind), dns1123_subdomain)
    return [_invalid('metadata.name', name, m) for m in rule(name)]


# --------------------------------------------------------------------------------------------------
# The rules of kube's validation code for the kinds the operator writes.
# --------------------------------------------------------------------------------------------------
def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _nonnegative(spec: Mapping[str, Any], key: str, path: str) -> list[Cause]:
    value = spec.get(key)
    if _int(value) and value < 0:
        return [_invalid(f'{path}.{key}', value, 'must be greater than or equal to 0')]
    return []


def _port_causes(value: Any, field: str) -> list[Cause]:
    if _int(value) and not 1 <= value <= 65535:
        return [_invalid(field, value, 'must be between 1 and 65535, inclusive')]
    return []


def _pod_template_causes(template: Any, path: str, *, restart_policies: list[str] | None = None) -> list[Cause]:
    if not isinstance(template, dict):
        return []
    causes = label_causes((template.get('metadata') or {}).get('labels'), f'{path}.metadata.labels')
    causes += annotation_causes((template.get('metadata') or {}).get('annotations'), f'{path}.metadata.annotations')
    spec = template.get('spec') or {}
    containers = spec.get('containers')
    if containers == []:  # a missing list is the schema's "required"
        causes.append(_required(f'{path}.spec.containers'))
    seen: set[str] = set()
    for i, container in enumerate(containers or []):
        if not isinstance(container, dict):
            continue
        cpath = f'{path}.spec.containers[{i}]'
        name = container.get('name') or ''
        causes += [_invalid(f'{cpath}.name', name, m) for m in dns1123_label(name)] if name else []
        if name in seen:
            causes.append({'reason': 'FieldValueDuplicate', 'field': f'{cpath}.name',
                           'message': f'Duplicate value: {logic._fmt(name)}'})
        seen.add(name)
        if not container.get('image'):
            causes.append(_required(f'{cpath}.image'))
        for j, port in enumerate(container.get('ports') or []):
            if isinstance(port, dict):
                causes += _port_causes(port.get('containerPort'), f'{cpath}.ports[{j}].containerPort')
    if restart_policies is not None and spec.get('restartPolicy', 'Always') not in restart_policies:
        if 'restartPolicy' in spec:
            causes.append(_not_supported(f'{path}.spec.restartPolicy', spec['restartPolicy'], restart_policies))
        else:
            causes.append(_required(f'{path}.spec.restartPolicy',
                                    'valid values: ' + ', '.join(logic._fmt(s) for s in restart_policies)))
    return causes


def _deployment_causes(obj: Mapping[str, Any]) -> list[Cause]:
    spec = obj.get('spec') or {}
    causes = _nonnegative(spec, 'replicas', 'spec') + _nonnegative(spec, 'revisionHistoryLimit', 'spec')
    causes += _nonnegative(spec, 'minReadySeconds', 'spec')
    causes += label_causes((spec.get('selector') or {}).get('matchLabels'), 'spec.selector.matchLabels')
    return causes + _pod_template_causes(spec.get('template'), 'spec.template')


def _job_causes(obj: Mapping[str, Any]) -> list[Cause]:
    spec = obj.get('spec') or {}
    causes: list[Cause] = []
    for key in ('parallelism', 'completions', 'backoffLimit', 'activeDeadlineSeconds', 'ttlSecondsAfterFinished'):
        causes += _nonnegative(spec, key, 'spec')
    if not spec.get('manualSelector'):
        # The server labels the Job and its pods with job-name=<name>: a name over 63 characters cannot be a label.
        name = (obj.get('metadata') or {}).get('name') or ''
        for field in ('metadata.labels', 'spec.template.labels'):
            causes += [_invalid(field, name, m) for m in label_value(name) if 'no more than' in m]
    return causes + _pod_template_causes(spec.get('template'), 'spec.template', restart_policies=['OnFailure', 'Never'])


def _service_causes(obj: Mapping[str, Any]) -> list[Cause]:
    spec = obj.get('spec') or {}
    causes = label_causes(spec.get('selector'), 'spec.selector')
    ports = [p for p in spec.get('ports') or [] if isinstance(p, dict)]
    names: set[str] = set()
    for i, port in enumerate(ports):
        path = f'spec.ports[{i}]'
        causes += _port_causes(port.get('port'), f'{path}.port')
        target = port.get('targetPort')
        if _int(target):
            causes += _port_causes(target, f'{path}.targetPort')
        elif isinstance(target, str) and not (len(target) <= 15 and re.fullmatch(_IANA_SVC_NAME, target)):
            causes.append(_invalid(f'{path}.targetPort', target, 'must contain only alpha-numeric characters (a-z, 0-9), '
                                   'and hyphens (-), at most 15 characters'))
        name = port.get('name') or ''
        if len(ports) > 1 and not name:
            causes.append(_required(f'{path}.name'))
        elif name:
            causes += [_invalid(f'{path}.name', name, m) for m in dns1123_label(name)]
            if name in names:
                causes.append({'reason': 'FieldValueDuplicate', 'field': f'{path}.name',
                               'message': f'Duplicate value: {logic._fmt(name)}'})
            names.add(name)
    return causes


# The part of Gateway API v1's HTTPRoute schema the operator and the lab touch (limits as published).
_BACKEND_REF = {
    'type': 'object', 'required': ['name'], 'x-kubernetes-preserve-unknown-fields': True,
    'properties': {
        'group': {'type': 'string', 'maxLength': 253},
        'kind': {'type': 'string', 'minLength': 1, 'maxLength': 63},
        'name': {'type': 'string', 'minLength': 1, 'maxLength': 253},
        'namespace': {'type': 'string', 'minLength': 1, 'maxLength': 63},
        'port': {'type': 'integer', 'minimum': 1, 'maximum': 65535},
        'weight': {'type': 'integer', 'minimum': 0, 'maximum': 1000000},
    },
}
HTTPROUTE_SCHEMA: dict[str, Any] = {
    'type': 'object', 'x-kubernetes-preserve-unknown-fields': True,
    'properties': {'spec': {
        'type': 'object', 'x-kubernetes-preserve-unknown-fields': True,
        'properties': {
            'parentRefs': {'type': 'array', 'maxItems': 32, 'items': {
                'type': 'object', 'required': ['name'], 'x-kubernetes-preserve-unknown-fields': True,
                'properties': {'name': {'type': 'string', 'minLength': 1, 'maxLength': 253}}}},
            'hostnames': {'type': 'array', 'maxItems': 16, 'items': {'type': 'string', 'minLength': 1, 'maxLength': 253}},
            'rules': {'type': 'array', 'maxItems': 16, 'items': {
                'type': 'object', 'x-kubernetes-preserve-unknown-fields': True,
                'properties': {'backendRefs': {'type': 'array', 'maxItems': 16, 'items': _BACKEND_REF}}}},
        },
    }},
}


def _httproute_causes(obj: Mapping[str, Any]) -> list[Cause]:
    return logic.validate(obj, HTTPROUTE_SCHEMA, '', root=True)


_KIND_RULES = {
    ('apps', 'Deployment'): _deployment_causes,
    ('batch', 'Job'): _job_causes,
    ('', 'Service'): _service_causes,
    ('gateway.networking.k8s.io', 'HTTPRoute'): _httproute_causes,
}


# --------------------------------------------------------------------------------------------------
# Decoding into the Go types, with the schemas kubernetes-validate ships.
# --------------------------------------------------------------------------------------------------
_FORMATS = jsonschema.FormatChecker(formats=())


@_FORMATS.checks('int32')
def _is_int32(value: Any) -> bool:
    return not _int(value) or -2**31 <= value < 2**31


@_FORMATS.checks('int64')
def _is_int64(value: Any) -> bool:
    return not _int(value) or -2**63 <= value < 2**63


def _schema_dir() -> Any:
    return resources.files('kubernetes_validate').joinpath('kubernetes-json-schema', f'v{KUBE_SCHEMA_VERSION}-local-strict')


@functools.cache
def _registry() -> referencing.Registry:
    definitions = json.loads(_schema_dir().joinpath('_definitions.json').read_text())
    return referencing.Resource.from_contents(definitions) @ referencing.Registry()


@functools.cache
def _kind_validator(group: str, version: str, kind: str) -> jsonschema.protocols.Validator | None:
    """The validator of a built-in kind, or None when kubernetes-validate has no schema for it."""
    prefix = group.split('.', 1)[0]
    api = f'{prefix}-{version}' if group else version
    path = _schema_dir().joinpath(f'{kind.lower()}-{api}.json')
    if not path.is_file():
        return None
    schema = json.loads(path.read_text())
    return jsonschema.Draft202012Validator(schema, registry=_registry(), format_checker=_FORMATS)


def _without_nulls(value: Any) -> Any:
    """Go decodes a JSON null as "not set": so does the check."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _dotted(path: Any) -> str:
    """A field path as kube prints it in causes: spec.ports[0].port."""
    out = ''
    for part in path:
        out += f'[{part}]' if isinstance(part, int) else (f'.{part}' if out else str(part))
    return out


def _check_schema(validator: Any, kind: str, version: str, obj: dict[str, Any], *,
                  strict: bool) -> tuple[dict[str, Any], list[Cause]]:
    causes: list[Cause] = []
    unknown: list[list[Any]] = []
    for error in validator.iter_errors(_without_nulls(obj)):
        path = list(error.absolute_path)
        if error.validator == 'additionalProperties':
            known = set((error.schema or {}).get('properties') or {})
            unknown += [path + [key] for key in error.instance if key not in known]
        elif error.validator == 'required':
            causes += [_required(_dotted(path + [key])) for key in error.validator_value if key not in error.instance]
        elif error.validator == 'enum':
            causes.append(_not_supported(_dotted(path), error.instance, list(error.validator_value)))
        else:  # type, format (int32/int64 range), oneOf (int-or-string): the Go decoder refuses it
            raise DecodeError(f'{kind} in version "{version}" cannot be handled as a {kind}: '
                              + _unmarshal_message(kind, validator.schema, path, error.instance))
    if unknown and strict:
        fields = ', '.join(f'unknown field "{_dotted(p)}"' for p in sorted(unknown, key=_dotted))
        raise DecodeError(f'{kind} in version "{version}" cannot be handled as a {kind}: strict decoding error: {fields}')
    for path in unknown:
        obj = _drop(obj, path)
    return obj, causes


def _drop(obj: Any, path: list[Any]) -> Any:
    """A copy of ``obj`` without the field at ``path`` (unknown fields are dropped on decoding)."""
    if not path:
        return obj
    head, rest = path[0], path[1:]
    if isinstance(obj, dict) and head in obj:
        return {k: v for k, v in obj.items() if k != head} if not rest else {**obj, head: _drop(obj[head], rest)}
    if isinstance(obj, list) and isinstance(head, int) and head < len(obj):
        return [*obj[:head], _drop(obj[head], rest), *obj[head + 1:]]
    return obj


_JSON_KINDS = {bool: 'bool', str: 'string', list: 'array', dict: 'object'}


def _unmarshal_message(kind: str, root: dict[str, Any], path: list[Any], value: Any) -> str:
    """Go's ``json: cannot unmarshal X into Go struct field T.path of type Y`` for a bad value."""
    holder, go_type = _go_field(kind, root, path)
    what = next((name for t, name in _JSON_KINDS.items() if isinstance(value, t)), 'number')
    if what == 'number':
        what = f'number {json.dumps(value)}'
    fields = '.'.join(str(p) for p in path if not isinstance(p, int))
    return f'json: cannot unmarshal {what} into Go struct field {holder}.{fields} of type {go_type}'


def _go_field(kind: str, root: dict[str, Any], path: list[Any]) -> tuple[str, str]:
    """(the Go struct holding the last field of ``path``, the field's Go type), following $refs."""
    definitions = _registry().contents('https://kubernetes.io/api/_definitions.json')['$defs']
    schema, struct, holder, ref = root, kind, kind, ''
    for part in path:
        if isinstance(part, int):
            schema = schema.get('items') or {}
        else:
            holder = struct.rsplit('.', 1)[-1]
            schema = (schema.get('properties') or {}).get(part) or {}
        ref = ''
        while '$ref' in schema:
            ref = struct = schema['$ref'].rsplit('/', 1)[-1]
            schema = definitions.get(ref, {})
    if ref:
        return holder, ('intstr.IntOrString' if ref.endswith('IntOrString') else '.'.join(ref.rsplit('.', 2)[-2:]))
    types = schema.get('type')
    json_type = next((t for t in (types if isinstance(types, list) else [types]) if t and t != 'null'), '')
    if json_type == 'integer':
        return holder, str(schema.get('format') or 'int64')
    return holder, {'string': 'string', 'boolean': 'bool', 'number': 'float64', 'array': '[]interface {}',
                    'object': 'map[string]string'}.get(json_type, 'interface {}')
