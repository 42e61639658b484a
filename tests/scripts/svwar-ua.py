#!/usr/bin/env python3
"""Run SIPVicious svwar with another User-Agent.

svwar has no option for its User-Agent ("friendly-scanner", the default of
sipvicious.libs.svhelper.makeRequest); its compact mode (-c) drops the
header instead. This sets the default before svwar runs, as an attacker
editing one string would, and leaves everything else as shipped.

usage: svwar-ua.py USER_AGENT [svwar options] TARGET
"""
import sys

from sipvicious.libs import svhelper

defaults = list(svhelper.makeRequest.__defaults__)
defaults[defaults.index("friendly-scanner")] = sys.argv[1]
svhelper.makeRequest.__defaults__ = tuple(defaults)

from sipvicious import svwar  # noqa: E402  (after the patch, on purpose)

sys.argv = ["sipvicious_svwar"] + sys.argv[2:]
svwar.main()
