"""The CRD and the configuration reference, generated from the operator's models.

The spec models (operator/cloudpilot/models/spec.py) are the one source of the schema: the
operator needs them at run time anyway, and the CRD's Kubernetes-only parts (patterns, list
types, CEL rules, pool defaults, per-queue wording) are attached to them as metadata
(cloudpilot.models.crd_meta). Not shipped: nothing here runs in the operator.

    python -m scripts.crdgen           # rewrite the CRD, the chart's copy and the docs table
    python -m scripts.crdgen --check   # exit 1 if any of them is out of date

tests/unit/test_generated_schema.py runs the check byte for byte.
"""
