"""Run a ``distill`` stage under Accelerate's FSDP on the CPU, for the tests (no GPU needed).

    ACCELERATE_USE_CPU=1 accelerate launch --config_file recipes/accelerate/fsdp.yaml --num_processes 2 \\
        --mixed_precision no tests/fsdp_on_cpu.py distill.teacher RECIPE [key=value ...]

Accelerate turns FSDP on only for GPUs and other accelerators: ``AcceleratorState`` switches to
``DistributedType.FSDP`` inside its ``MULTI_GPU``/``MULTI_NPU``/... branch, so on the CPU (``MULTI_CPU``,
gloo) the plugin the launch made is ignored and the processes run plain DDP; and ``accelerate launch
--cpu`` takes its single-process launcher and drops FSDP altogether. torch's ``fully_shard`` itself
runs on the CPU over gloo, so this patches ``AcceleratorState`` to honour the FSDP plugin on the CPU
the way it does on GPUs, then runs the module named by the first argument as ``python -m`` would:
the run goes through Accelerate's FSDP2 code (``fsdp2_prepare_model``, its ``clip_grad_norm_``,
``get_state_dict``) and ``distill.fsdp``, as on GPUs.
"""
from __future__ import annotations

import functools
import runpy
import sys

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

_init = AcceleratorState.__init__


@functools.wraps(_init)
def _init_with_fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    _init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        # What the GPU branch of AcceleratorState.__init__ does, the process's one state included.
        self.distributed_type = DistributedType.FSDP
        if self._mixed_precision != "no":
            fsdp_plugin.set_mixed_precision(self._mixed_precision)
        self.fsdp_plugin = fsdp_plugin
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP


AcceleratorState.__init__ = _init_with_fsdp_on_cpu

if __name__ == "__main__":
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
