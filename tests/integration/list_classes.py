"""Prints the names of the unittest classes in a test file that define tests of their
own, one per line, so that ctest registers each class as a test of its own (rerun alone
with `ctest -R`, spread by `ctest -j`). Run at configure time by tests/CMakeLists.txt."""
import ast
import sys


def main(path):
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(
                isinstance(item, ast.FunctionDef) and item.name.startswith("test")
                for item in node.body):
            print(node.name)


if __name__ == "__main__":
    main(sys.argv[1])
