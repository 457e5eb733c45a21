"""A simulated device: the toolkit's CLI as a device would run it, in one of a few remote
environments built from this checkout. `python tests/remote/device_env.py KIND toolkit-args...`

- plain:   no torch, no OpenVINO (a Jetson-like device side: ONNX Runtime only)
- ov:      no torch, OpenVINO importable (an Intel edge box)
- trt:     no torch; the conformance suite's strict fake TensorRT and fake CUDA runtime are
           importable, so engines are built and run through the toolkit's real TensorRT code
           against the fakes (labelled conformance: nothing runs on TensorRT)
- old:     a toolkit that reads manifest schema 3 at most (an outdated device)
- hostile: answers `get` with a file the workstation did not ask for (../ names, huge sizes)
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

KIND = sys.argv[1]
STALL = os.environ.get("TOOLKIT_TEST_DEVICE_STALL")  # put | run: hang there, to be cut off
BLOCK = {"plain": "openvino", "ov": "", "trt": "openvino", "old": "openvino",
         "hostile": "openvino"}[KIND]
os.environ["TOOLKIT_TEST_BLOCK"] = BLOCK


def _fake_tensorrt() -> None:
    from cuda import bindings

    from tests.backends.trt.conformance.fake_cuda import FakeCudaRuntime
    from tests.backends.trt.conformance.fake_trt import Machine, make_tensorrt
    from toolkit.backends.trt import cuda as cuda_module

    machine = Machine()
    driver = int(bindings.__version__.split(".")[0]) * 1000 + 20
    runtime = FakeCudaRuntime(name=machine.gpu, driver_version=driver)
    major, minor = machine.compute_capability.split(".")
    runtime.props.update(major=int(major), minor=int(minor))
    sys.modules["tensorrt"] = make_tensorrt("10.13", runtime, machine)
    cuda_module._import_cudart = lambda: runtime
    cuda_module._torch_with_cuda = lambda: None


def _stall(where: str) -> None:
    """Hang half-way through `put` (a file partly written) or `run` (the bundle staged, the
    command not finished), so a test can cut the connection or press Ctrl-C there."""
    import time

    from toolkit.remote import device

    if where == "put":
        original = device.copy_hashed

        def copy_then_hang(source, path):
            path.write_bytes(source.read(10))  # a partial file in the store
            time.sleep(120)
            return original(source, path)

        device.copy_hashed = copy_then_hang
    else:
        from toolkit.cli import app

        original_cli = app.run_cli

        def run_then_hang(argv):
            workdir = os.path.dirname(os.path.dirname(argv[1]))  # WORKDIR/bundles/ID
            with open(os.path.join(workdir, "stalled.pid"), "w") as handle:
                handle.write(str(os.getpid()))
            time.sleep(120)
            return original_cli(argv)

        app.run_cli = run_then_hang


def _old() -> None:
    from toolkit import manifest, version

    manifest.SCHEMA_VERSION = 3
    version.__version__ = "0.0.9"


def _hostile() -> None:
    import io
    import tarfile

    from toolkit.remote import device

    if os.environ.get("TOOLKIT_TEST_HOSTILE") == "huge":  # claims a 16 TiB engine
        read = device._read_manifest

        def inflated(directory):
            manifest = read(directory)
            for record in manifest.get("artifacts", []):
                if record.get("format") == "trt":
                    record["size_bytes"] = 1 << 44
            return manifest

        device._read_manifest = inflated
        return

    def get(workdir, bundle_id, names, stdout):
        with tarfile.open(fileobj=stdout, mode="w|") as archive:
            data = b"x" * 64
            info = tarfile.TarInfo("../../escaped.txt")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        stdout.flush()
        return 0

    device.get = get


if __name__ == "__main__":
    with open(os.path.join(ROOT, "tests", "no_torch.py")) as blocker:
        exec(blocker.read().split("if __name__")[0])
    sys.meta_path.insert(0, _Blocker())  # noqa: F821 - defined by the exec above
    if KIND == "trt":
        _fake_tensorrt()
    elif KIND == "old":
        _old()
    elif KIND == "hostile":  # builds engines (the fake), then answers with what wasn't asked
        _fake_tensorrt()
        _hostile()
    if STALL:
        _stall(STALL)
    sys.argv = ["toolkit", *sys.argv[2:]]
    from toolkit.cli.app import main

    main()
