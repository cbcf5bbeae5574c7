"""Parsers for cPyMemTrace log files and names, shared by the tests."""

import re

NAME_RE = re.compile(
    r"^(?P<date>\d{8})_(?P<time>\d{6})_(?P<ordinal>\d+)_(?P<pid>\d+)_(?P<kind>[POT])_"
    r"(?P<depth>\d+)_PY(?P<version>\S+)\.log$"
)

EVENT_ROWS = ("FRST:", "NEXT:", "PREV:", "LAST:")
WHATS = {"CALL", "EXCEPT", "LINE", "RETURN", "C_CALL", "C_EXCEPT", "C_RETURN", "OPCODE"}


def parse_name(name):
    """The components of a log file name, or AssertionError."""
    match = NAME_RE.match(name)
    assert match, f"bad log file name {name!r}"
    parts = match.groupdict()
    for key in ("ordinal", "pid", "depth"):
        parts[key] = int(parts[key])
    return parts


class Event:
    """One FRST/NEXT/PREV/LAST line."""

    def __init__(self, line):
        tokens = line.split()
        self.row = tokens[0]
        self.event = int(tokens[1])
        assert tokens[2].startswith("+"), line
        self.d_event = int(tokens[2][1:])
        self.clock = float(tokens[3])
        self.what = tokens[4]
        assert self.what in WHATS, line
        self.d_rss = int(tokens[-1])
        self.rss = int(tokens[-2])
        self.function = tokens[-3]
        self.line = int(tokens[-4])
        self.file = " ".join(tokens[5:-4])
        self.text = line

    def __repr__(self):
        return f"Event({self.text!r})"


class Message:
    """One MSG line of a Profile/Trace log."""

    def __init__(self, line):
        head, _, text = line.partition(" # ")
        tokens = head.split()
        assert tokens[0] == "MSG:", line
        self.event = int(tokens[1])
        self.d_event = int(tokens[2].lstrip("+"))
        self.clock = float(tokens[3])
        self.text = text


class ProfileLog:
    """A parsed Profile/Trace log: opening message, events and messages in file order."""

    def __init__(self, text):
        self.lines = text.split("\n")
        assert self.lines[-1] == "", "log must end with a newline"
        body = self.lines[:-1]
        sof = body.index("SOF")
        self.opening = "\n".join(body[:sof]) if sof else None
        assert body[sof + 1].startswith("HDR: "), body[sof + 1]
        self.header = body[sof + 1].split()[1:]
        assert self.header == [
            "Event", "dEvent", "Clock", "What", "File", "Line", "Function", "RSS", "dRSS",
        ]
        assert body[-1] == "EOF", body[-1]
        self.records = []
        continuation = []
        for line in body[sof + 2 : -1]:
            if line.startswith(EVENT_ROWS):
                if line.startswith("PREV:") and len(line.split()) == 4:
                    self.records.append(("PREV-MSG", line))
                else:
                    self.records.append((line[:5], Event(line)))
            elif line.startswith("MSG:  "):
                self.records.append(("MSG:", Message(line)))
            else:
                continuation.append(line)
                assert self.records and self.records[-1][0] == "MSG:", f"stray line {line!r}"
                self.records[-1][1].text += "\n" + line
        kinds = [kind for kind, _ in self.records]
        assert kinds[0] == "FRST:" and kinds.count("FRST:") == 1, kinds[:3]
        assert kinds[-1] == "LAST:" and kinds.count("LAST:") == 1, kinds[-3:]

    def events(self, row=None):
        return [r for kind, r in self.records if isinstance(r, Event) and (row is None or kind == row)]

    def messages(self):
        return [r.text for kind, r in self.records if kind == "MSG:"]


def read_profile_log(path):
    with open(path, encoding="utf-8") as file:
        return ProfileLog(file.read())


class RefRecord:
    """One NEW/DEL line of a ReferenceTracing log."""

    def __init__(self, line):
        tokens = line.split()
        self.row = tokens[0]
        self.clock = float(tokens[1])
        self.address = int(tokens[2], 16)
        assert tokens[2].startswith("0x"), line
        self.refcnt = int(tokens[3])
        self.type = tokens[4]
        self.d_rss = int(tokens[-1])
        self.rss = int(tokens[-2])
        self.function = tokens[-3]
        self.line = int(tokens[-4])
        self.file = " ".join(tokens[5:-4])


class RefLog:
    """A parsed ReferenceTracing log."""

    def __init__(self, text):
        lines = text.split("\n")
        assert lines[-1] == ""
        body = lines[:-1]
        sof = body.index("SOF")
        self.opening = "\n".join(body[:sof]) if sof else None
        assert body[sof + 1].split() == [
            "HDR:", "Clock", "Address", "RefCnt", "Type", "File", "Line", "Function", "RSS", "dRSS",
        ], body[sof + 1]
        assert body[-1] == "EOF"
        self.records = []
        self.messages = []
        for line in body[sof + 2 : -1]:
            if line.startswith(("NEW:", "DEL:")):
                self.records.append(RefRecord(line))
            elif line.startswith("MSG: "):
                self.messages.append(line.partition(" # ")[2])
            else:
                raise AssertionError(f"unexpected line {line!r}")

    def types(self, row=None):
        return {r.type for r in self.records if row is None or r.row == row}


def read_ref_log(path):
    with open(path, encoding="utf-8") as file:
        return RefLog(file.read())
