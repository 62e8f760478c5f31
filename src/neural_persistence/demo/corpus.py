"""The demo's corpus: the King James Bible from Debian's ``bible-kjv`` package, read through its ``bible`` command.

About 4.1 MB of English once the verse numbers and chapter headings are stripped; cached as plain text.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

__all__ = ["CorpusMissingError", "load_kjv"]

INSTALL = "sudo apt-get install bible-kjv"
_VERSE = re.compile(r"^\s*\d+ (.*\S)\s*$")


class CorpusMissingError(RuntimeError):
    """The corpus is neither cached nor installable from here."""


def load_kjv(cache_dir: str | Path = ".data", bible: str = "bible") -> str:
    """The King James Bible as plain text, one verse per line (cached in ``cache_dir/kjv.txt``)."""
    cache = Path(cache_dir) / "kjv.txt"
    if cache.is_file():
        return cache.read_text()
    exe = shutil.which(bible)
    if exe is None:
        raise CorpusMissingError(
            f"the demo's corpus needs Debian's bible-kjv package (the `{bible}` command was not found): "
            f"install it with `{INSTALL}`, or put any plain-text corpus at {cache}"
        )
    raw = subprocess.run([exe, "-l100000", "Gen1:1-Rev22:21"], capture_output=True, text=True, check=True,
                         env={"COLUMNS": "100000", "PATH": "/usr/bin:/bin"}).stdout
    verses = [m.group(1) for line in raw.splitlines() if (m := _VERSE.match(line))]
    if len(verses) < 30000:
        raise CorpusMissingError(f"`{exe}` gave {len(verses)} verses, expected about 31,000; is bible-kjv complete?")
    text = "\n".join(verses) + "\n"
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(text)
    return text
