"""Turn hyperfine JSON exports and /usr/bin/time -v logs into one Markdown table."""
import json
import pathlib
import re
import statistics
import sys

results = pathlib.Path(sys.argv[1])
counts = [int(k) for k in sys.argv[2].split()]
tools = [
    ("secret-sidecar", "secret-sidecar (this project)"),
    ("curl-batch", "one curl process, BatchGetSecretValue, 20 ids per call (floor)"),
    ("curl", "one curl process, one kept-alive connection, GetSecretValue (floor)"),
    ("teller", "teller (Rust, one GetSecretValue per secret, sequential)"),
    ("boto3", "Python boto3 script, one process"),
    ("awscli", "aws CLI, one call per secret"),
    ("secret-sidecar-ssm", "secret-sidecar, Parameter Store (SecureString)"),
    ("curl-ssm-batch", "one curl process, GetParameters, 10 names per call (floor)"),
    ("curl-ssm", "one curl process, one kept-alive connection, GetParameter (floor)"),
]


def wall(tool, k):
    path = results / f"{tool}-{k}.json"
    if not path.exists():
        return None
    times = json.loads(path.read_text())["results"][0]["times"]
    return statistics.median(times)


def wall_min(tool, k):
    path = results / f"{tool}-{k}.json"
    if not path.exists():
        return None
    return min(json.loads(path.read_text())["results"][0]["times"])


def cpu(tool, k):
    """Mean user+system CPU per run, from hyperfine's rusage (microsecond precision)."""
    path = results / f"{tool}-{k}.json"
    if not path.exists():
        return None
    result = json.loads(path.read_text())["results"][0]
    return result["user"] + result["system"]


def peak_rss(tool, k):
    """The largest maximum resident set size /usr/bin/time -v saw over its runs."""
    rss = [
        int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.read_text()).group(1))
        for p in sorted(results.glob(f"{tool}-{k}.time.*"))
    ]
    return max(rss) if rss else None


def fmt_time(seconds):
    if seconds is None:
        return "–"
    if seconds < 0.1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


print("| tool | " + " | ".join(f"K={k} wall" for k in counts) + " | "
      + " | ".join(f"K={k} CPU" for k in counts) + f" | peak RSS (K={counts[-1]}) |")
# wall: median of hyperfine runs; CPU: mean user+system per run; RSS: max of 3 runs.
print("|---" * (2 * len(counts) + 2) + "|")
rows = {}
for tool, label in tools:
    walls = [wall(tool, k) for k in counts]
    cpus = [cpu(tool, k) for k in counts]
    rss = peak_rss(tool, counts[-1])
    if not any(walls):
        continue  # not run (teller is optional)
    rows[tool] = (walls, cpus, rss)
    rss_text = f"{rss / 1024:.1f} MiB" if rss else "–"
    print(f"| {label} | " + " | ".join(fmt_time(w) for w in walls) + " | "
          + " | ".join(fmt_time(c) for c in cpus) + f" | {rss_text} |")

print()
print("Fastest run (wall), and the median's distance from it: on a quiet machine the two")
print("are close; a large gap means other work disturbed the run.")
print()
print("| tool | " + " | ".join(f"K={k} min wall (median ÷ min)" for k in counts) + " |")
print("|---" * (len(counts) + 1) + "|")
for tool, label in tools:
    if tool not in rows:
        continue
    cells = []
    for k, median in zip(counts, rows[tool][0]):
        fastest = wall_min(tool, k)
        cells.append(f"{fmt_time(fastest)} ({median / fastest:.2f}×)" if fastest and median else "–")
    print(f"| {label} | " + " | ".join(cells) + " |")

def ratios(ours_tool, others):
    ours_wall, ours_cpu, _ = rows[ours_tool]
    for tool, label in tools:
        if tool not in others or tool not in rows:
            continue
        walls, cpus, _ = rows[tool]
        parts = []
        for k, a, b, c, d in zip(counts, ours_wall, walls, ours_cpu, cpus):
            if a and b:
                parts.append(f"K={k}: wall {a / b:.2f}×, CPU {c / d:.2f}×" if c and d else f"K={k}: wall {a / b:.2f}×")
        print(f"- vs {label}: " + "; ".join(parts))


print()
print("Ratios (secret-sidecar ÷ other, same run):")
ratios("secret-sidecar", ["curl-batch", "curl", "teller", "boto3", "awscli"])
if "secret-sidecar-ssm" in rows:
    print()
    print("Parameter Store ratios (secret-sidecar reading ssm:// ÷ other, same run):")
    ratios("secret-sidecar-ssm", ["curl-ssm-batch", "curl-ssm"])
