"""Test-only stand-in for torchvision (tests/standin/README.md): the four names the vendor's code uses."""
