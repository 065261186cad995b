"""Why a VM stopped during boot, from its console and QEMU's own log (what `nxc start`
says for each node that never reported ready)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nxc.errors import NxcError
from nxc.flavours.vm_ramdisk.runtime import boot_failure
from nxc.runtime.memory import check_memory


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    initrd = tmp_path / "initrd"
    initrd.write_bytes(bytes(3 * 2**20))
    argv = ["qemu-system-x86_64", "-m", "24", "-initrd", str(initrd)]
    return tmp_path / "console.log", tmp_path / "qemu.log", argv


def test_the_first_panic_line_not_the_stack_trace(files: tuple[Path, Path, list[str]]) -> None:
    console, qemu_log, argv = files
    trace = "".join(f"[ 1.{i:03}]  ? some_function+0x{i:x}/0x100\n" for i in range(60))
    console.write_text(
        "[ 0.5] Initramfs unpacking failed: write error\n"
        + trace
        + "[ 1.9] Kernel panic - not syncing: No working init found.\n"
    )
    assert boot_failure(console, qemu_log, argv, 0) == (
        "the kernel said: Initramfs unpacking failed: write error"
    )


def test_out_of_memory_and_what_qemu_said(files: tuple[Path, Path, list[str]]) -> None:
    console, qemu_log, argv = files
    console.write_text("booting\r\nOut of memory and no killable processes...\r\n")
    qemu_log.write_text("qemu-system-x86_64: terminating on signal 15\n")
    assert boot_failure(console, qemu_log, argv, 1) == (
        "the kernel said: Out of memory and no killable processes...; "
        "QEMU said: qemu-system-x86_64: terminating on signal 15"
    )


def test_nothing_printed_names_memory_and_initrd(files: tuple[Path, Path, list[str]]) -> None:
    console, qemu_log, argv = files
    console.write_bytes(b"")
    assert boot_failure(console, qemu_log, argv, 0) == (
        "QEMU exited (status 0) before the kernel printed anything: with 24 MiB of memory "
        "for a 3 MiB initrd the kernel cannot even unpack it (give the role more memory: "
        "--memory)"
    )
    console.write_text("Linux version 6.1\n")
    assert boot_failure(console, qemu_log, argv, None) == "QEMU exited; see the console log"


def test_memory_refused_below_the_least_warned_below_the_estimate() -> None:
    said: list[str] = []
    with pytest.raises(NxcError, match=r"^role db: 30 MiB \(the VM's memory\) is too little"):
        check_memory("db", 30, 256, 38, "the VM's memory", "give --memory db=256", said.append)
    assert said == []
    check_memory("db", 80, 256, 38, "the VM's memory", "give --memory db=256", said.append)
    assert said == [
        "warning: role db: 80 MiB (the VM's memory) is too little to boot its image: about "
        "256 MiB are needed (the compressed initrd and its unpacked copy both sit in RAM at "
        "boot); trying anyway"
    ]
    check_memory("db", 256, 256, 38, "the VM's memory", "give --memory db=256", said.append)
    assert len(said) == 1
