"""What the machine is and what its owner allows: the CPU, GPUs, ZeroGPU and disk (hardware), the quotas every
visitor is held to (limits, a leaf policy), work whose cost a stranger controls run in a child process with limits
(sandbox), and whose process a pid is (process).

Imports only the top-level declarations (hub); every other package may import it."""
