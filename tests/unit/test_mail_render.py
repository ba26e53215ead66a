"""E-mail: the exact mails of a burst (opened, update, resolved), their threading headers and the digest mode."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest
from pydantic import ValidationError

from alerts.base import SinkContext
from alerts.grouping import GroupUpdate, group_id_for
from alerts.mail import EmailConfig, EmailSink
from alerts.mail_render import Mail, to_mime
from alerts.store import open_state_db
from tests.unit.alert_samples import Clock, case_burst, changed, closed, opened
from tests.unit.test_slack_render import grouped

BURST = group_id_for("exp-1")
ROOT = f"<{BURST}@kommun.example>"
PASSWORD = "smtp-unit-password-0000"


def sink(**settings: object) -> EmailSink:
    config = {"host": "smtp.example", "sender": "permwatch@kommun.example", "to": ["soc@kommun.example"], **settings}
    return EmailSink(EmailConfig.model_validate(config))


def test_the_first_mail_of_a_burst_opens_its_thread() -> None:
    [mail] = sink().render(GroupUpdate.single(opened()))
    assert (mail.kind, mail.message_id, mail.in_reply_to, mail.digest_key) == ("opened", ROOT, None, "ledning")
    assert mail.subject == "[permwatch] Critical exposure: 1 folder readable by alla (label ledning)"
    assert mail.text == (
        "Critical exposure: 1 folder readable by alla (label ledning)\n"
        "\n"
        "Status: Open\n"
        "Severity: Critical\n"
        "Label: ledning\n"
        "Readable by: alla\n"
        "Kind: Contents: outsiders can read files in it\n"
        "People outside the label: 5\n"
        "Changed by: it-update\n"
        "When: 2026-11-23 08:00:00 UTC\n"
        "\n"
        "Folder: /srv/share/ledning\n"
        "2 paths affected, e.g.\n"
        "  /srv/share/ledning\n"
        "  /srv/share/ledning/protokoll 2026-11-20.txt\n"
        "\n"
        "Replay: permwatch timeline exp-1\n"
        f"Burst: {BURST}\n"
    )
    assert mail.html == (
        '<!DOCTYPE html><html><body style="font-family:sans-serif">'
        "<h2>Critical exposure: 1 folder readable by alla (label ledning)</h2><table>"
        '<tr><th align="left" style="padding-right:1em">Status</th><td>Open</td></tr>'
        '<tr><th align="left" style="padding-right:1em">Severity</th><td>Critical</td></tr>'
        '<tr><th align="left" style="padding-right:1em">Label</th><td>ledning</td></tr>'
        '<tr><th align="left" style="padding-right:1em">Readable by</th><td>alla</td></tr>'
        '<tr><th align="left" style="padding-right:1em">Kind</th><td>Contents: outsiders can read files in it</td></tr>'
        '<tr><th align="left" style="padding-right:1em">People outside the label</th><td>5</td></tr>'
        '<tr><th align="left" style="padding-right:1em">Changed by</th><td>it-update</td></tr>'
        '<tr><th align="left" style="padding-right:1em">When</th><td>2026-11-23 08:00:00 UTC</td></tr></table>'
        "<p>Folder: /srv/share/ledning<br>2 paths affected, e.g.<br><code>/srv/share/ledning</code><br>"
        "<code>/srv/share/ledning/protokoll 2026-11-20.txt</code></p>"
        f'<p style="color:#666">Replay: permwatch timeline exp-1<br>Burst: {BURST}</p></body></html>\n'
    )


def test_a_change_is_an_update_mail_replying_to_the_first() -> None:
    first = opened()
    [mail] = sink(hide_below_label=True).render(grouped(first, changed(first, groups=("alla", "it"), people=7), new=1))
    assert mail.kind == "update" and mail.in_reply_to == ROOT
    assert mail.message_id.startswith(f"<{BURST}.") and mail.message_id.endswith("@kommun.example>")
    assert mail.subject == "Re: [permwatch] Critical exposure: 1 folder readable by alla, it (label ledning)"
    assert mail.text.splitlines()[:4] == [
        "Critical exposure: 1 folder readable by alla, it (label ledning)",
        "",
        "Changed: 1 folder",
        "  /srv/share/ledning now readable by alla, it (7 people)",
    ]
    assert "  /srv/share/ledning/…" in mail.text and "protokoll" not in mail.text + mail.html


def test_the_close_is_the_resolved_mail_with_a_fixed_id() -> None:
    first = opened()
    [mail] = sink().render(grouped(first, closed(first), new=1))
    assert (mail.kind, mail.message_id, mail.in_reply_to) == ("resolved", f"<{BURST}.resolved@kommun.example>", ROOT)
    assert mail.subject == (
        "Re: [permwatch] Resolved after 1 h 2 min: 1 folder no longer readable by alla (label ledning)"
    )
    assert mail.text.splitlines()[2:5] == ["Closed: 1 folder", "  /srv/share/ledning after 1 h 2 min", ""]


def test_the_mime_message_is_multipart_alternative_threaded_and_stable() -> None:
    first = opened()
    email = sink()
    [mail] = email.render(grouped(first, closed(first), new=1))
    message = to_mime(mail, email.options)
    assert message["Message-ID"] == f"<{BURST}.resolved@kommun.example>"
    assert message["In-Reply-To"] == ROOT and message["References"] == ROOT
    assert message["From"] == "permwatch@kommun.example" and message["To"] == "soc@kommun.example"
    assert message["Date"] == "Mon, 23 Nov 2026 09:02:05 +0000"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert parts[0].get_content() == mail.text
    again = to_mime(email.render(grouped(first, closed(first), new=1))[0], email.options)
    assert again.as_bytes() == message.as_bytes()  # a re-send after a crash is the same mail, byte for byte


def test_a_burst_names_the_top_folders_and_html_is_escaped() -> None:
    [mail] = sink().render(grouped(*case_burst(12)))
    assert mail.subject == (
        "[permwatch] High exposure: 12 folders readable by alla (label case-00000, case-00001, case-00002 +9 more)"
    )
    assert "  /srv/share/hr/cases/c-00009: 2 paths, 40 people\n  … and 2 more\n" in mail.text
    [odd] = sink().render(GroupUpdate.single(opened(folder="/srv/<b>&x", sample_paths=(), actor="<script>")))
    assert "<code>" not in odd.html.split("Folder: ")[0] and "&lt;script&gt;" in odd.html and "<script>" not in odd.html


def test_digest_mode_mails_at_most_once_per_window_per_label(tmp_path: Path) -> None:
    clock = Clock()
    config = EmailConfig(host="smtp.example", sender="pw@kommun.example", to=["soc@kommun.example"], digest_minutes=10)
    database = open_state_db(tmp_path / "alerts.db")
    email = EmailSink(config, SinkContext(database=database, clock=clock))
    mailed: list[Mail] = []
    email._mail = mailed.append  # type: ignore[method-assign]  # the SMTP side is the integration test's
    first = opened()
    email.send(email.render(GroupUpdate.single(first)))
    assert [m.kind for m in mailed] == ["opened"]
    clock.advance(60)
    email.send(email.render(grouped(first, changed(first, groups=("alla", "it"), people=7), new=1)))
    email.send(email.render(grouped(first, closed(first, sequence=2), new=1)))
    email.flush_due()
    assert len(mailed) == 1  # held: the label had its mail a minute ago
    other = opened("exp-2", folder="/srv/share/hr", label=first.label.model_copy(update={"name": "hr"}), causes=("x",))
    email.send(email.render(GroupUpdate.single(other)))
    assert [m.digest_key for m in mailed] == ["ledning", "hr"]  # another label has its own window
    # a restart: the held mails are in the state file
    email = EmailSink(config, SinkContext(database=database, clock=clock))
    email._mail = mailed.append  # type: ignore[method-assign]
    clock.advance(9 * 60 + 1)
    email.flush_due()
    assert len(mailed) == 3 and mailed[2].kind == "digest"
    assert mailed[2].subject == "[permwatch] Digest: 2 alerts for label ledning"
    assert "Changed: 1 folder" in mailed[2].text and "Closed: 1 folder" in mailed[2].text
    email.flush_due()
    assert len(mailed) == 3


def test_the_password_comes_from_env_or_file_and_is_never_shown(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PW_SMTP_PASSWORD", PASSWORD)
    email = sink(username="permwatch", password_env="PW_SMTP_PASSWORD")
    assert PASSWORD not in repr(email) + repr(email.config) + repr(email.options)
    with pytest.raises(ValidationError, match="exactly one of password_env and password_file"):
        sink(username="permwatch")
    with pytest.raises(ValidationError, match="in clear"):
        sink(username="permwatch", password_env="PW_SMTP_PASSWORD", security="none")
    with pytest.raises(ValidationError, match=f"cannot read {tmp_path / 'nope'}"):
        sink(username="permwatch", password_file=tmp_path / "nope")
    with pytest.raises(ValidationError, match="not an e-mail address"):
        sink(to=["soc"])
    assert sink(security="tls").config.effective_port == 465


def test_a_line_break_in_a_name_cannot_break_the_headers() -> None:
    label = opened().label.model_copy(update={"name": "ledning\r\nBcc: everyone@example.org"})
    email = sink()
    [mail] = email.render(GroupUpdate.single(opened(label=label)))
    assert "\n" not in mail.subject and "\r" not in mail.subject
    message = to_mime(mail, email.options)
    assert message["Bcc"] is None and message["Subject"].endswith("(label ledning Bcc: everyone@example.org)")


def test_actor_omit_sends_no_user_name_and_name_is_the_default() -> None:
    first = opened(actor="cecilia.berg")
    update = grouped(first, changed(first, groups=("alla", "it"), people=7), new=1)
    [named] = sink().render(GroupUpdate.single(first))
    assert "Changed by: cecilia.berg\n" in named.text
    for mail in (*sink(actor="omit").render(GroupUpdate.single(first)), *sink(actor="omit").render(update)):
        mime = to_mime(mail, sink(actor="omit").options).as_string()
        assert "Changed by" not in mail.text + mail.html and "cecilia" not in mime
    with pytest.raises(ValidationError, match="actor"):
        sink(actor="hidden")


def test_a_subject_longer_than_78_characters_reads_back_without_a_leading_space() -> None:
    [mail] = sink().render(GroupUpdate.single(opened()))
    raw = to_mime(mail, sink().options).as_bytes()
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert len("Subject: " + mail.subject) > 78 and parsed["Subject"] == mail.subject


def test_an_opening_that_comes_with_its_later_change_is_told_as_an_opening() -> None:
    """A restart's backlog brings an exposure's opening and a later change in one update of a burst already
    mailed: the update says the burst widened by that folder (as it is now), not that a folder changed."""
    first = opened()
    other = opened("exp-2", folder="/srv/share/styrelse", causes=("fs-2",))
    widened = changed(other, groups=("alla", "it"), people=7, after=1.0)
    [mail] = sink().render(grouped(first, other, widened, new=2))
    assert mail.kind == "update"
    assert mail.text.splitlines()[2:5] == [
        "Widened: 1 more folder now readable, 2 in all",
        "  /srv/share/styrelse by alla, it",
        "",
    ]


def test_an_opening_closed_again_in_the_same_update_is_told_as_both() -> None:
    first = opened()
    other = opened("exp-2", folder="/srv/share/styrelse", causes=("fs-2",))
    [mail] = sink().render(grouped(first, other, closed(other, after=4.0), new=2))
    assert mail.kind == "update"
    assert mail.text.splitlines()[2:5] == [
        "Closed: 1 folder",
        "  /srv/share/styrelse after 4 s (opened and closed again in this update)",
        "",
    ]
