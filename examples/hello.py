"""The launcher's hello world: which Python, which environment, which arguments."""
import sys

print(f"Python {sys.version.split()[0]}")
print(f"sys.prefix     = {sys.prefix}")
print(f"sys.executable = {sys.executable}")
print(f"argv           = {sys.argv}")
