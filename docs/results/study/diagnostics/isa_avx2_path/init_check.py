"""Are the initial weights the same bits on the AVX-512 and the AVX2 path? (study section 41)

python init_check.py OUT.pt  # once plainly, once under the caps; then compare the two files:
python init_check.py --compare A.pt B.pt
"""

import sys

import torch
import torchvision


def draw(path: str) -> None:
    torch.manual_seed(0)
    out = {
        "normal": torch.empty(256, 256).normal_(),
        "uniform": torch.empty(256, 256).uniform_(),
        "kaiming": torch.nn.init.kaiming_normal_(
            torch.empty(64, 64, 3, 3), mode="fan_out", nonlinearity="relu"
        ),
    }
    torch.manual_seed(0)
    out |= {f"r18.{k}": v for k, v in torchvision.models.resnet18().state_dict().items()}
    torch.save(out, path)
    print(path, torch.backends.cpu.get_cpu_capability())


def compare(a_path: str, b_path: str) -> None:
    a = torch.load(a_path, weights_only=True)
    b = torch.load(b_path, weights_only=True)
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    print(f"{len(a)} tensors, {len(differing)} differ: {differing}")


if __name__ == "__main__":
    compare(*sys.argv[2:4]) if sys.argv[1] == "--compare" else draw(sys.argv[1])
