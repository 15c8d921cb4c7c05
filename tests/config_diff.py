"""Comparing ml_collections configs field by field (shared by the config tests)."""


def leaves(tree: dict, prefix: str = ""):
    """(dotted field, value) for every leaf of a nested dict."""
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def differences(config, base) -> dict:
    """{dotted field: (config's value, base's value)} where two configs differ; both must have
    the same fields."""
    ours, theirs = dict(leaves(config.to_dict())), dict(leaves(base.to_dict()))
    assert ours.keys() == theirs.keys()
    return {k: (v, theirs[k]) for k, v in ours.items() if v != theirs[k]}
