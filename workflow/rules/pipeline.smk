# Rules generated from workflow/dag.py: one rule per stage, `python -m stages.<name>`.
import json
import os
import sys
import uuid
from pathlib import Path

from snakemake.exceptions import WorkflowError

sys.path.insert(0, str(Path(workflow.main_snakefile).parent))

from repurify.errors import ParamsError
from repurify.params import load_params
from workflow.dag import slurm_resources, stages

try:
    PARAMS = load_params("params.yaml", profile=config.get("profile"))
except ParamsError as exc:
    raise WorkflowError(str(exc)) from None

PROFILE = PARAMS.profile
STAGES = stages(PARAMS.active)
_RAW = PARAMS.model_dump(mode="json")
shell.prefix("export REPURIFY_ENGINE=snakemake; ")  # tags the jobs' MLflow runs
# One MLflow pipeline run per invocation: jobs (SLURM ones too) inherit the key, and a
# job's own parse of this file keeps it.
os.environ.setdefault("REPURIFY_PIPELINE_RUN", f"snakemake:{uuid.uuid4()}")


def _param_value(key):
    node = _RAW
    for part in key.split("."):
        node = node[part]
    return node


def _constant(value):
    return lambda wildcards: value


for _stage in STAGES:

    rule:
        name:
            _stage.name
        input:
            code=_stage.code_files(),
            data=[d.format(profile=PROFILE) for d in _stage.deps],
        output:
            [o.format(profile=PROFILE) for o in (*_stage.outs, *_stage.uncached)],
            dirs=[directory(o.format(profile=PROFILE)) for o in _stage.out_dirs],
            metrics=[m.format(profile=PROFILE) for m in _stage.metrics],
        params:
            # a change of any of these keys reruns the rule (rerun-trigger "params"); a function,
            # as Snakemake reads braces in params strings as wildcards (a description's
            # "{train,val}" would be one)
            values=_constant(json.dumps({k: _param_value(k) for k in _stage.param_keys(PROFILE)},
                                        sort_keys=True)),
            # bound here: a `shell:` expression would see the loop's last stage at run time
            cmd=_stage.cmd(PROFILE),
        log:
            _stage.log(PROFILE),
        threads: int(os.environ.get("REPURIFY_THREADS", _stage.resources.threads))
        resources:
            **slurm_resources(_stage, PROFILE),
        conda:
            "../envs/repurify.yaml"
        shell:
            "{params.cmd}"
