"""Formatting for the report and the log: numbers with thousands separators,
shares, ratios written beside their reference ("0.63 × nginx"), the error
cell of a wrk measurement, verdicts and Markdown tables."""


def fmt(value, digits=0):
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def fmt_share(share):
    return "—" if share is None else f"{share * 100:.0f}%"


def ratio(a, b):
    return a / b if a and b else None


def times(value, reference, digits=2):
    """A ratio beside what it is a ratio to: `0.63 × nginx`, or a dash."""
    return "—" if value is None else f"{fmt(value, digits)} × {reference}"


def errors(figures):
    """The error count, and what the errors were when there were any."""
    if not figures.get("errors"):
        return "0" if figures.get("errors") is not None else "—"
    kinds = [(figures.get("timeouts", 0), "timeouts"), (figures.get("connect_errors", 0), "connect"),
             (figures.get("read_errors", 0), "read"), (figures.get("write_errors", 0), "write"),
             (max(figures.get("status_errors", 0), figures.get("non_2xx", 0)), "non-2xx")]
    named = ", ".join(f"{count} {kind}" for count, kind in kinds if count)
    return f"{figures['errors']}" + (f" ({named})" if named else "")


def ms(figures, field, digits=2):
    """A latency that wrk gives in µs, in ms; a dash when not recorded."""
    value = (figures or {}).get(field)
    return fmt(value / 1000, digits) if value is not None else "—"


def others(mine, reference):
    return f"{fmt_share((mine or {}).get('others_cpu_share'))} / {fmt_share((reference or {}).get('others_cpu_share'))}"


def verdict(met):
    return "met" if met else "**not met**"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
