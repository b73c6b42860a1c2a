"""corral.machine: readings of this machine, taken by callers and handed to the compiler as data.

`gpus` reads the GPU inventory through NVML (an empty inventory, with the reason, when there is
none), `memory` the host's available memory, `facts` what earlier processes learnt the hard way
(llama.cpp's repacked CPU weights crashing here).

May import: corral.errors, corral.config.
"""
