# Config validation against workflow/schemas/config.schema.yaml, with errors a user can
# act on: the key and where it is, the allowed keys, the schema's path. (Snakemake's own
# message ends in a dump of the whole schema.)
import difflib

import jsonschema
import yaml
from snakemake.exceptions import WorkflowError


def validate_config(config, schema_path):
    """Fill in the schema's defaults (Snakemake's validate); on an invalid config, stop
    with one line per error, the most relevant first."""
    with open(os.path.join(workflow.basedir, schema_path)) as handle:
        schema = yaml.safe_load(handle)
    given = getattr(getattr(workflow, "config_settings", None), "config", None) or {}
    typed_overrides(config, schema, given)
    try:
        validate(config, schema_path)
    except WorkflowError:
        validator = jsonschema.Draft202012Validator(schema)
        errors = sorted(
            validator.iter_errors(config), key=jsonschema.exceptions.relevance
        )
        if not errors:
            raise
        lines = dict.fromkeys(describe_config_error(e) for e in errors)
        lines[f"(every key is described in the schema, {schema_path})"] = None
        raise WorkflowError("\n".join(lines)) from None


def typed_overrides(config, schema, given):
    """Snakemake reads `--config key={a: 0.25, b: false}` with YAML's base loader, so
    every value inside a mapping or list arrives as a string ('0.25', 'false', 'null').
    Where such a value of ``given`` (the parsed --config) is in ``config`` and the schema
    wants another type that the string is in YAML, take the value (in place), so that
    overrides mean what they say. A config file's quoted "yes" stays a string."""
    validator = jsonschema.Draft202012Validator(schema)
    for error in list(flat_errors(validator.iter_errors(config))):
        if error.validator != "type" or not isinstance(error.instance, str):
            continue
        if not isinstance(value_at(given, error.absolute_path), str):
            continue  # not from --config
        try:
            value = yaml.safe_load(error.instance)
        except yaml.YAMLError:
            continue
        if isinstance(value, str):
            continue
        if not validator.evolve(schema=error.schema).is_valid(value):
            continue
        *parents, last = error.absolute_path
        value_at(config, parents)[last] = value


def value_at(tree, path):
    """``tree``'s value at a jsonschema path (keys and list indices), or None."""
    for key in path:
        try:
            tree = tree[key]
        except (KeyError, IndexError, TypeError):
            return None
    return tree


def flat_errors(errors):
    """jsonschema errors with those of their subschemas (anyOf, oneOf) after them."""
    for error in errors:
        yield error
        yield from flat_errors(error.context)


def describe_config_error(error):
    """One line for a jsonschema error: an unknown key with the allowed ones and the
    nearest spelling, or the offending value with what was expected."""
    where = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "additionalProperties" and "properties" in error.schema:
        allowed = list(error.schema["properties"])
        unknown = [k for k in error.instance if k not in allowed]
        named = []
        for key in unknown:
            close = difflib.get_close_matches(key, allowed, n=1)
            named.append(
                f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else "")
            )
        place = f"under '{where}'" if where else "at the top level"
        return (
            f"config: unknown key {', '.join(named)} {place}; "
            f"the keys allowed there are {', '.join(allowed)}"
        )
    return f"config: {where or 'top level'}: {error.message}"
