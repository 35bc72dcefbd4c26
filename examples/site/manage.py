#!/usr/bin/env python3
"""The example site's manage.py: ``python3 examples/site/manage.py rundemo``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
