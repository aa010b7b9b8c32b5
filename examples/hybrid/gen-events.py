#!/usr/bin/env python3
"""Writes synthetic customer messages of a payments app, the shape of examples/hybrid/events.jsonl,
for the hybrid example's benchmark: a share of them (2% by default) report fraud, abuse or an
outage in words the example's weights flag; the others are everyday questions, some of them with
a lone alarming word ("is this a scam?") that the weights must not flag on its own.

    examples/hybrid/gen-events.py OUT.jsonl                  # 1,000,000 events, 2% flagged
    examples/hybrid/gen-events.py OUT.jsonl --count 200 --flagged-share 0.04 --seed 7
    examples/hybrid/gen-events.py /tmp/h/events.jsonl --manifest /tmp/h/pipeline.toml

Each line: {"id": "E-0000001", "ts": <ms>, "channel": "chat"|"email"|"app", "customer": "C-12345",
"text": "..."}. The alarming events are exactly round(count * share), at random places; the same
--seed gives the same file. OUT may be "-" for standard output.

--manifest writes a copy of examples/hybrid/pipeline.toml that reads OUT (absolute paths, so it
works from anywhere) and writes its results and dead letters next to OUT. Needs only python3.
"""
import argparse
import json
import os
import random
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

NAMES = ["Alex Moreau", "Priya Nair", "Jonas Weber", "Mei Tanaka", "Lucas Silva", "Amara Okafor",
         "Elena Petrova", "Tom Hughes", "Sara Lindqvist", "Diego Ramos", "Nina Kowalska", "Omar Haddad"]
MERCHANTS = ["FreshMart", "CityRide", "Streamly", "Bookhaven", "Northwind Air", "Pixel Games",
             "Corner Cafe", "GreenGrocer", "Urban Fitness", "HomeBits", "Skyline Hotels", "QuickFuel"]
CITIES = ["Lisbon", "Berlin", "Lyon", "Madrid", "Milan", "Dublin", "Krakow", "Rotterdam", "Vienna", "Porto"]
COUNTRIES = ["Brazil", "India", "Japan", "Canada", "Kenya", "Mexico", "Australia", "Turkey"]
SCREENS = ["statements", "cards", "savings", "budget", "transfers", "settings"]
ACTIONS = ["change my email address", "download last month's statement", "add a second card",
           "set up a recurring payment", "close my savings pot", "update my phone number",
           "turn on two-factor login", "export my transactions to CSV", "order a new PIN letter",
           "rename a savings pot", "split a bill with a friend", "change my address"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
TIMES = ["07:15", "08:40", "09:05", "11:30", "13:20", "16:45", "18:10", "21:55"]

# Everyday messages. Some carry one weighted word (charged, refund, down, scam, declined...), never
# enough together to reach the example's threshold.
BENIGN = [
    "How do I {action}?",
    "Hi, how can I {action} from the app?",
    "I was charged twice for {merchant} on {day}, can I get a refund?",
    "Thanks, the transfer to {name} arrived.",
    "The app is a bit slow when I open {screen}, otherwise fine.",
    "Can you raise my card limit to {amount}?",
    "Payment of {amount} to {merchant} has been pending since {day}, is that normal?",
    "Where can I find my IBAN for my salary?",
    "Is there a fee for sending {amount} to {country}?",
    "My card was declined at {merchant} but the money left my account.",
    "I got a text saying my account is locked, is this a scam?",
    "Love the new {screen} screen, thanks!",
    "The {screen} page was down for a minute this morning but it works now, thanks.",
    "Please cancel my {merchant} subscription, I no longer use it.",
    "Can I get a statement in PDF for my landlord?",
    "Quick question: do you support Apple Pay in {country}?",
    "I changed my phone, how do I move my account to the new one?",
    "Why was my refund from {merchant} only {amount}?",
    "Great service in {city}, the card worked everywhere.",
    "Can I pay {name} back in instalments? Thank you.",
    "My salary of {amount} has not arrived yet, when is the cut-off time?",
    "The exchange rate for {country} looked high yesterday, how is it computed?",
    "Lost my card somewhere in {city}, please send a new one.",
    "Someone from {merchant} called about a chargeback, what does that mean?",
]

# Fraud, abuse and outage reports: two or more strong words each.
ALARMING = [
    "Someone hacked my account and made {n} unauthorized transfers to {name}, {amount} in total. Please freeze everything!",
    "Fraud alert: my card was stolen in {city} and there are {n} payments I never made.",
    "I clicked a phishing link and now my account is compromised, {amount} is gone.",
    "Fraudulent charges from {merchant} every day since {day}, I did not authorise any of them. Card stolen?",
    "{name} keeps sending me threats and harassment in the payment notes. I feel unsafe, please block this user.",
    "A customer is abusive and threatened our cashier in {city} over a refund. Harassment like this needs action.",
    "Total outage: card payments are down for all our stores in {city} since {time}, customers cannot pay. URGENT.",
    "Outage again: the app and the website are down since {time}, nobody on our team can log in. Urgent!",
    "After that data breach my account is compromised: {n} logins from {country} I do not know. Hacked?",
    "Scam: someone impersonating your support took my card details and {amount}. Is this fraud?",
]

CHANNELS = ["chat", "chat", "app", "email"]


def fill(template, rng):
    return template.format(
        action=rng.choice(ACTIONS), merchant=rng.choice(MERCHANTS), day=rng.choice(DAYS),
        name=rng.choice(NAMES), screen=rng.choice(SCREENS), city=rng.choice(CITIES),
        country=rng.choice(COUNTRIES), time=rng.choice(TIMES), n=rng.randint(2, 9),
        amount="EUR {:,}".format(rng.choice([40, 85, 120, 250, 499, 900, 1200, 2500, 4800])),
    )


def write_events(out, count, share, seed):
    rng = random.Random(seed)
    flagged = set(rng.sample(range(count), round(count * share)))
    width = max(7, len(str(count)))
    ts = 1767258000000  # 2026-01-01T09:00:00Z
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": ")).encode
    lines = []
    for i in range(count):
        ts += rng.randint(20, 4000)
        template = rng.choice(ALARMING if i in flagged else BENIGN)
        lines.append(dumps({
            "id": "E-{:0{}d}".format(i + 1, width),
            "ts": ts,
            "channel": rng.choice(CHANNELS),
            "customer": "C-{:05d}".format(rng.randint(10000, 99999)),
            "text": fill(template, rng),
        }))
        if len(lines) >= 10000:
            out.write("\n".join(lines) + "\n")
            lines.clear()
    if lines:
        out.write("\n".join(lines) + "\n")
    return len(flagged)


def write_manifest(manifest, events):
    """examples/hybrid/pipeline.toml with the source reading `events`, outputs next to it and
    every other relative path made absolute."""
    events = os.path.abspath(events)
    stem = os.path.splitext(events)[0]
    outputs = {"[source]": events, "[sink]": stem + ".escalated.jsonl",
               "[dead_letter]": stem + ".dead-letters.jsonl"}
    section, lines = None, []
    with open(os.path.join(HERE, "pipeline.toml"), encoding="utf-8") as f:
        for line in f:
            header = re.match(r"\s*(\[\[?[^\]]+\]\]?)", line)
            if header:
                section = header.group(1)
            setting = re.match(r'(\s*)(path|plugin|dir)(\s*=\s*)"([^"]*)"(.*)', line, re.S)
            if setting:
                indent, key, eq, value, rest = setting.groups()
                if key == "path" and section in outputs:
                    value = outputs[section]
                elif not os.path.isabs(value):
                    value = os.path.normpath(os.path.join(HERE, value))
                line = '{}{}{}"{}"{}'.format(indent, key, eq, value, rest)
            lines.append(line)
    with open(manifest, "w", encoding="utf-8") as f:
        f.write("# Written by examples/hybrid/gen-events.py from examples/hybrid/pipeline.toml.\n")
        f.writelines(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the JSON-lines file to write, or - for standard output")
    parser.add_argument("--count", type=int, default=1_000_000, help="events (default 1000000)")
    parser.add_argument("--flagged-share", type=float, default=0.02,
                        help="share of fraud/abuse/outage reports, 0 to 1 (default 0.02)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    parser.add_argument("--manifest", help="also write a pipeline manifest that reads OUT")
    args = parser.parse_args()
    if args.count < 1:
        parser.error("--count must be at least 1")
    if not 0.0 <= args.flagged_share <= 1.0:
        parser.error("--flagged-share must be between 0 and 1")
    if args.manifest and args.out == "-":
        parser.error("--manifest needs OUT to be a file")

    if args.out == "-":
        flagged = write_events(sys.stdout, args.count, args.flagged_share, args.seed)
    else:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as out:
            flagged = write_events(out, args.count, args.flagged_share, args.seed)
    if args.manifest:
        write_manifest(args.manifest, args.out)
    print("{}: {} events, {} of them fraud/abuse/outage reports{}".format(
        args.out, args.count, flagged,
        "; manifest " + args.manifest if args.manifest else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
