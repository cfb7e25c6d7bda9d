#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Read a format-patch cover letter back into the branch description that
`git format-patch --cover-from-description=subject` turns into it again:
first paragraph the subject (without "[PATCH 0/N]"), the rest the text up to
the shortlog."""
import email
import re
import sys


def read(path):
    with open(path, encoding="utf-8") as f:
        msg = email.message_from_file(f)
    subject = re.sub(r"\s*\n\s*", " ", msg["Subject"])
    subject = re.sub(r"^\[[^]]*\]\s*", "", subject)
    body = msg.get_payload().splitlines()
    text = []
    for line in body:
        if re.match(r"^\S.* \(\d+\):$", line):  # shortlog header: "Name (N):"
            break
        text.append(line)
    return subject + "\n\n" + "\n".join(text).strip("\n") + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "read":
        sys.exit("usage: cover.py read COVER_LETTER")
    sys.stdout.write(read(sys.argv[2]))
