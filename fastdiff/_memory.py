"""Whether a request fits in memory, checked before allocating: a num_steps or a batch that cannot fit fails at
once, saying how much it needs and how much there is, instead of after minutes of work and tens of GB.

The figures are lower bounds of what the request allocates (the tables it builds, counted from the code), so a
refusal is never wrong; where the free memory cannot be read, nothing is refused.
"""
from __future__ import annotations

import torch

MEMINFO = "/proc/meminfo"
# Requests below this are not checked: reading the free memory (/proc/meminfo: ~20 us) would cost more than such a
# request can risk, and a sampler makes a few of them on every call.
UNCHECKED_BYTES = 2**20


class NotEnoughMemoryError(ValueError, MemoryError):
    """An argument asks for more memory than is available. A ValueError, since it is the argument's value that
    cannot be served here, and a MemoryError, for code that handles running out of memory."""


def available_bytes(device) -> tuple[int, str] | None:
    """(bytes that can still be allocated on `device`, where that figure comes from), or None where unknown:
    on the CPU, Linux's MemAvailable; on CUDA, the device's free memory plus what torch's allocator holds unused."""
    device = torch.device(device)
    if device.type == "cpu":
        return _mem_available()
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        unused = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return free + unused, "free memory from torch.cuda.mem_get_info, plus what torch's allocator holds unused"
    return None


def _mem_available() -> tuple[int, str] | None:
    """MemAvailable of /proc/meminfo (Linux): what can be allocated without swapping, page cache included."""
    try:
        with open(MEMINFO, encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, f"MemAvailable in {MEMINFO}"
    except (OSError, ValueError, IndexError):
        return None
    return None


def require_memory(name: str, given: str, needs: dict, what: str, advice: str) -> None:
    """Raise NotEnoughMemoryError naming argument `name` and what was `given` when the bytes that `needs` maps to a
    device exceed what is available there. `what` says what the bytes are for; `advice` what to do instead.
    Requests of less than UNCHECKED_BYTES pass unchecked."""
    for device, needed in needs.items():
        if needed < UNCHECKED_BYTES:
            continue
        found = available_bytes(device)
        if found is None:
            continue
        available, source = found
        if needed > available:
            raise NotEnoughMemoryError(
                f"{name}: {given} needs at least {format_bytes(needed)} on {torch.device(device)} for {what}, but "
                f"{format_bytes(available)} is available ({source}); {advice}")


def on_devices(host_bytes: int, device, device_bytes: int) -> dict:
    """{device: bytes} of host work plus work on `device`: on the CPU both come out of the same memory."""
    device = torch.device(device)
    if device.type == "cpu":
        return {device: host_bytes + device_bytes}
    return {torch.device("cpu"): host_bytes, device: device_bytes}


def format_bytes(n: int) -> str:
    """n bytes in binary units: 512 B, 1.5 KiB, ..., 3.2 PiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"
