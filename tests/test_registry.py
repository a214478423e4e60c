"""The family registry: a family defined in a file of its own is found again by its runs."""

import textwrap

from nerfkit.models import MODELS, family_source, import_family


def test_family_loaded_from_a_file_records_the_file(tmp_path):
    src = tmp_path / "my_family.py"
    src.write_text(textwrap.dedent('''
        import dataclasses
        from typing import ClassVar
        from nerfkit.models import ModelConfig, register_family

        @register_family
        @dataclasses.dataclass(frozen=True)
        class MyConfig(ModelConfig):
            family: ClassVar[str] = "test-file-family"
            width: int = 8
    '''))
    try:
        cls = import_family("test-file-family", str(src))
        assert cls.__name__ == "MyConfig"
        # Not the module name it was loaded under, which nothing could import later.
        assert family_source("test-file-family") == str(src.resolve())
    finally:
        MODELS.pop("test-file-family", None)
