"""The LDAP collector's pure parts: accesslog reqMod parsing, DNs and names, disabled accounts, the mirror."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import get_args

import pytest
from ldap3.core.exceptions import LDAPSocketOpenError

from collectors.ldap import CHANGE_MODES, Backoff, LdapCollector, read_password
from collectors.ldap_accesslog import (
    Modification,
    actor_of,
    apply_modifications,
    parse_req_mods,
    renamed_entry,
)
from collectors.ldap_entries import (
    EntrySchema,
    RawEntry,
    csn_time,
    days_since_epoch,
    is_within,
    normalize_dn,
    parent_dn,
    parse_generalized_time,
)
from collectors.ldap_mirror import DirectoryMirror
from collectors.ldap_modes import EntryChange
from collectors.ldap_session import DirectoryLimitExceeded
from collectors.ldap_settings import LdapCollectorConfig
from permwatch.config import ConfigError
from permwatch.events import DirectoryGroup, DirectoryUser, Event

PEOPLE = "ou=people,dc=example,dc=org"
GROUPS = "ou=groups,dc=example,dc=org"
TODAY = days_since_epoch(datetime(2024, 6, 1, tzinfo=UTC))


def config(**overrides: object) -> LdapCollectorConfig:
    settings: dict[str, object] = {"uri": "ldap://ldap.example.org", "user_base": PEOPLE, "group_base": GROUPS}
    return LdapCollectorConfig.model_validate(settings | overrides)


SCHEMA = EntrySchema.from_config(config())


def user(uid: str, number: int, gid: int = 100, **attrs: tuple[str, ...]) -> RawEntry:
    base = {"objectclass": ("inetOrgPerson", "posixAccount"), "uid": (uid,), "uidnumber": (str(number),)}
    return RawEntry(f"uid={uid},{PEOPLE}", base | {"gidnumber": (str(gid),)} | attrs)


def group(cn: str, *members: str, gid: int | None = None, uids: tuple[str, ...] = ()) -> RawEntry:
    attrs: dict[str, tuple[str, ...]] = {"objectclass": ("groupOfNames", "extensibleObject"), "cn": (cn,)}
    if members:
        attrs["member"] = members
    if gid is not None:
        attrs["gidnumber"] = (str(gid),)
    if uids:
        attrs["memberuid"] = uids
    return RawEntry(f"cn={cn},{GROUPS}", attrs)


# ------------------------------------------------------------------ reqMod


def test_req_mod_lines_become_modifications() -> None:
    mods = parse_req_mods(
        (
            "member:+ cn=alla,ou=groups,dc=example,dc=org",
            "member:+ uid=anna,ou=people,dc=example,dc=org",
            "description:-",
            "shadowExpire:= 1",
            "uidNumber:# 2",
            "entryCSN:= 20240101120000.123456Z#000000#000#000000",
            "garbage without colon",
            "cn:? x",
        )
    )
    assert mods == [
        Modification("member", "+", ("cn=alla,ou=groups,dc=example,dc=org", "uid=anna,ou=people,dc=example,dc=org")),
        Modification("description", "-", ()),
        Modification("shadowexpire", "=", ("1",)),
        Modification("uidnumber", "#", ("2",)),
        Modification("entrycsn", "=", ("20240101120000.123456Z#000000#000#000000",)),
    ]


def test_value_with_colons_and_replace_with_nothing() -> None:
    assert parse_req_mods(("description:+ a: b: c", "memberUid:=")) == [
        Modification("description", "+", ("a: b: c",)),
        Modification("memberuid", "=", ()),
    ]


def test_modifications_apply_with_dn_aware_matching() -> None:
    wanted = frozenset({"member", "memberuid", "gidnumber", "uidnumber"})
    dn_valued = frozenset({"member"})
    attrs = {"member": ("uid=anna,ou=people,dc=example,dc=org",), "gidnumber": ("1",), "uidnumber": ("5",)}
    mods = parse_req_mods(
        (
            "member:+ UID=Anna, OU=People,DC=example,DC=org",  # already there, spelled differently
            "member:+ cn=alla,ou=groups,dc=example,dc=org",
            "member:- uid=ANNA,ou=people,dc=example,dc=org",
            "memberUid:+ hugo",
            "description:+ not wanted",
            "gidNumber:-",
            "uidNumber:# 3",
        )
    )
    assert apply_modifications(attrs, mods, wanted, dn_valued) == {
        "member": ("cn=alla,ou=groups,dc=example,dc=org",),
        "memberuid": ("hugo",),
        "uidnumber": ("8",),
    }
    assert attrs["member"] == ("uid=anna,ou=people,dc=example,dc=org",), "the input is not changed"


def test_rename_swaps_the_rdn_value() -> None:
    entry = group("alla", gid=5)
    renamed = renamed_entry(entry, f"cn=allstaff,{GROUPS}", "cn=allstaff", True, frozenset({"cn", "objectclass"}))
    assert renamed.dn == f"cn=allstaff,{GROUPS}"
    assert renamed.attrs["cn"] == ("allstaff",)
    kept = renamed_entry(entry, f"cn=allstaff,{GROUPS}", "cn=allstaff", False, frozenset({"cn"}))
    assert kept.attrs["cn"] == ("alla", "allstaff")


@pytest.mark.parametrize(
    ("authz", "actor"),
    [
        ("dn:uid=it-admin,ou=admins,dc=example,dc=org", "uid=it-admin,ou=admins,dc=example,dc=org"),
        ("uid=it-admin,ou=admins,dc=example,dc=org", "uid=it-admin,ou=admins,dc=example,dc=org"),
        ("", None),
        (None, None),
        ("dn:", None),
    ],
)
def test_actor_is_the_authorization_dn(authz: str | None, actor: str | None) -> None:
    assert actor_of(authz) == actor


# ------------------------------------------------------------------- DNs


@pytest.mark.parametrize(
    ("dn", "normal"),
    [
        ("CN=Alla , OU=Groups,DC=Example,DC=org", "cn=alla,ou=groups,dc=example,dc=org"),
        ("cn=Smith\\, John,ou=people", "cn=smith\\, john,ou=people"),
        ("cn=Smith\\2C John,ou=people", "cn=smith\\, john,ou=people"),
        ("cn=J\\C3\\B6rgen,ou=people", "cn=jörgen,ou=people"),
        ("uid=a+cn=B,ou=x", "cn=b+uid=a,ou=x"),
        ('cn="quoted, value",o=x', "cn=quoted\\, value,o=x"),
        ("", ""),
        ("not a dn", "not a dn"),
    ],
)
def test_dn_normalization(dn: str, normal: str) -> None:
    assert normalize_dn(dn) == normal


def test_within_and_parent() -> None:
    assert is_within("uid=a,ou=people,dc=x", "ou=people,dc=x")
    assert is_within("ou=people,dc=x", "ou=people,dc=x")
    assert not is_within("uid=a,ou=otherpeople,dc=x", "ou=people,dc=x")
    assert parent_dn("cn=Alla,ou=Groups,dc=x") == "ou=Groups,dc=x"


def test_principal_names_come_from_the_rdn_then_the_attribute() -> None:
    assert SCHEMA.name_of(group("Alla"), "group") == "Alla"
    two_names = RawEntry(f"cn=new,{GROUPS}", {"cn": ("old", "new"), "objectclass": ("groupOfNames",)})
    assert SCHEMA.name_of(two_names, "group") == "new", "after a rename that kept the old RDN value"
    by_entry_uuid = RawEntry(f"entryUUID=1234,{PEOPLE}", {"uid": ("zed",), "objectclass": ("posixAccount",)})
    assert SCHEMA.name_of(by_entry_uuid, "user") == "zed"
    assert SCHEMA.name_of(RawEntry(f"cn=x,{PEOPLE}", {}), "user") == "x"


def test_kind_needs_base_and_object_class() -> None:
    assert SCHEMA.kind_of(user("anna", 1)) == "user"
    assert SCHEMA.kind_of(group("alla")) == "group"
    assert SCHEMA.kind_of(RawEntry(f"uid=it,{PEOPLE}", {"objectclass": ("inetOrgPerson",)})) is None
    assert SCHEMA.kind_of(RawEntry("uid=a,ou=elsewhere,dc=org", {"objectclass": ("posixAccount",)})) is None
    posix = RawEntry(f"cn=g,{GROUPS}", {"objectclass": ("posixGroup",)})
    assert SCHEMA.kind_of(posix) == "group"


# --------------------------------------------------------------- disabled


@pytest.mark.parametrize(
    ("attrs", "disabled"),
    [
        ({}, False),
        ({"pwdaccountlockedtime": ("000001010000Z",)}, True),
        ({"pwdaccountlockedtime": ("20240601101010Z",)}, False),  # a lockout that lapses by itself
        ({"shadowexpire": ("1",)}, True),
        ({"shadowexpire": (str(TODAY),)}, True),
        ({"shadowexpire": (str(TODAY + 1),)}, False),
        ({"shadowexpire": ("-1",)}, False),
        ({"shadowexpire": ("0",)}, False),
        ({"useraccountcontrol": ("514",)}, True),  # NORMAL_ACCOUNT | ACCOUNTDISABLE
        ({"useraccountcontrol": ("512",)}, False),
        ({"nsaccountlock": ("TRUE",)}, True),
        ({"nsaccountlock": ("false",)}, False),
        ({"shadowexpire": ("soon",)}, False),
    ],
)
def test_disabled_detection(attrs: dict[str, tuple[str, ...]], disabled: bool) -> None:
    assert SCHEMA.is_disabled(RawEntry(f"uid=a,{PEOPLE}", attrs), TODAY) is disabled


def test_disabled_attribute_can_be_switched_off() -> None:
    schema = EntrySchema.from_config(config(attributes={"shadow_expire": ""}))
    assert not schema.is_disabled(RawEntry(f"uid=a,{PEOPLE}", {"shadowexpire": ("1",)}), TODAY)


# ----------------------------------------------------------------- times


def test_generalized_times() -> None:
    assert parse_generalized_time("20240131120000Z") == datetime(2024, 1, 31, 12, 0, tzinfo=UTC)
    assert parse_generalized_time("20240131120000.123456Z") == datetime(2024, 1, 31, 12, 0, 0, 123456, tzinfo=UTC)
    assert parse_generalized_time("20240131130000+0100") == datetime(2024, 1, 31, 12, 0, tzinfo=UTC)
    assert parse_generalized_time("202401311200Z") == datetime(2024, 1, 31, 12, 0, tzinfo=UTC)
    assert parse_generalized_time("yesterday") is None
    assert parse_generalized_time(None) is None
    assert csn_time("20240131120000.000042Z#000000#000#000000") == datetime(2024, 1, 31, 12, 0, 0, 42, tzinfo=UTC)


# ---------------------------------------------------------------- mirror


def mirror(*entries: RawEntry, referential_integrity: bool = True) -> DirectoryMirror:
    held = DirectoryMirror(SCHEMA, source="t", referential_integrity=referential_integrity, today=lambda: TODAY)
    held.load(entries)
    return held


def test_member_dns_map_to_names_and_unknown_dns_are_dropped() -> None:
    held = mirror(
        user("anna", 1),
        user("bo", 2),
        group("enhet", f"uid=bo,{PEOPLE}"),
        group(
            "alla",
            f"UID=Anna,{PEOPLE}",
            f"cn=enhet,{GROUPS}",
            "cn=nobody,dc=example,dc=org",
            f"uid=gone,{PEOPLE}",
            gid=7,
            uids=("carl",),
        ),
    )
    alla = held.states[normalize_dn(f"cn=alla,{GROUPS}")]
    assert isinstance(alla, DirectoryGroup)
    assert (alla.member_users, alla.member_groups, alla.gid) == (("anna", "carl"), ("enhet",), 7)


def test_a_member_appearing_later_updates_the_group_naming_it() -> None:
    held = mirror(group("alla", f"uid=dora,{PEOPLE}"))
    events = held.apply(EntryChange(f"uid=dora,{PEOPLE}", user("dora", 4), actor="uid=admin", changed_at=None))
    assert [(type(e).__name__, e.change) for e in events] == [
        ("DirectoryUser", "created"),
        ("DirectoryGroup", "members"),
    ]
    assert all(e.actor == "uid=admin" for e in events)


def test_rename_rewrites_member_dns_like_the_server() -> None:
    held = mirror(group("enhet"), group("alla", f"cn=enhet,{GROUPS}"))
    renamed = RawEntry(f"cn=unit,{GROUPS}", {**group("enhet").attrs, "cn": ("unit",)})
    events = held.apply(EntryChange(f"cn=enhet,{GROUPS}", renamed))
    changes = {(e.name, e.change, e.deleted) for e in events if isinstance(e, DirectoryGroup)}
    assert changes == {("unit", "renamed", False), ("enhet", "renamed", True), ("alla", "members", False)}
    assert held.get(f"cn=alla,{GROUPS}") == RawEntry(
        f"cn=alla,{GROUPS}", {**group("alla").attrs, "member": (f"cn=unit,{GROUPS}",)}
    )


def test_without_referential_integrity_a_renamed_member_dangles() -> None:
    held = mirror(group("enhet"), group("alla", f"cn=enhet,{GROUPS}"), referential_integrity=False)
    renamed = RawEntry(f"cn=unit,{GROUPS}", {**group("enhet").attrs, "cn": ("unit",)})
    events = held.apply(EntryChange(f"cn=enhet,{GROUPS}", renamed))
    alla = next(e for e in events if isinstance(e, DirectoryGroup) and e.name == "alla")
    assert (alla.removed, alla.added) == (("enhet",), ())


def test_a_rename_takes_the_groups_naming_it_as_the_server_holds_them() -> None:
    renamed = RawEntry(f"cn=unit,{GROUPS}", {**group("enhet").attrs, "cn": ("unit",)})
    asked: list[str] = []

    def server(members: str) -> Callable[[str], RawEntry | None]:
        def read(dn: str) -> RawEntry | None:
            asked.append(dn)
            return group("alla", members)

        return read

    # no refint on the server: the member DN still names the old entry, which is nobody now
    held = mirror(group("enhet"), group("alla", f"cn=enhet,{GROUPS}"), referential_integrity=True)
    events = held.apply(EntryChange(f"cn=enhet,{GROUPS}", renamed), server(f"cn=enhet,{GROUPS}"))
    alla = next(e for e in events if isinstance(e, DirectoryGroup) and e.name == "alla")
    assert (alla.removed, alla.added) == (("enhet",), ())
    assert held.get(f"cn=alla,{GROUPS}") == group("alla", f"cn=enhet,{GROUPS}"), "not rewritten as if refint ran"
    assert asked == [f"cn=alla,{GROUPS}"]
    # refint on the server: it rewrote the member; one event, the old name out and the new one in
    held = mirror(group("enhet"), group("alla", f"cn=enhet,{GROUPS}"), referential_integrity=False)
    events = held.apply(EntryChange(f"cn=enhet,{GROUPS}", renamed), server(f"cn=unit,{GROUPS}"))
    [alla] = [e for e in events if isinstance(e, DirectoryGroup) and e.name == "alla"]
    assert (alla.removed, alla.added) == (("enhet",), ("unit",))


def test_only_the_renamed_member_is_taken_from_the_server_the_groups_other_changes_wait_for_their_own() -> None:
    held = mirror(user("anna", 1), user("bo", 2), group("alla", f"uid=anna,{PEOPLE}", f"uid=bo,{PEOPLE}"))
    renamed = RawEntry(f"uid=ann,{PEOPLE}", {**user("anna", 1).attrs, "uid": ("ann",)})
    # the server's copy already has a later write (bo taken out by someone else) besides refint's rewrite
    events = held.apply(EntryChange(f"uid=anna,{PEOPLE}", renamed), lambda dn: group("alla", f"uid=ann,{PEOPLE}"))
    [alla] = [e for e in events if isinstance(e, DirectoryGroup)]
    assert (alla.added, alla.removed, alla.member_users) == (("ann",), ("anna",), ("ann", "bo"))


def test_a_deletion_rereads_the_groups_and_a_group_gone_meanwhile_waits_for_its_own_change() -> None:
    held = mirror(user("anna", 1), group("alla", f"uid=anna,{PEOPLE}"))
    events = held.apply(EntryChange(f"uid=anna,{PEOPLE}", None), lambda dn: None)
    assert sorted((e.name, e.deleted) for e in events) == [("alla", False), ("anna", True)]
    assert held.get(f"cn=alla,{GROUPS}") == group("alla", f"uid=anna,{PEOPLE}")


def test_disabling_is_named_and_out_of_scope_changes_publish_nothing() -> None:
    held = mirror(user("anna", 1))
    [event] = held.apply(EntryChange(f"uid=anna,{PEOPLE}", user("anna", 1, shadowexpire=("1",))))
    assert isinstance(event, DirectoryUser)
    assert (event.change, event.disabled) == ("disabled", True)
    assert held.apply(EntryChange("uid=x,ou=elsewhere,dc=org", RawEntry("uid=x,ou=elsewhere,dc=org", {}))) == []


def test_resnapshot_publishes_only_differences_and_sees_renames_by_unique_id() -> None:
    old_unit = RawEntry(f"cn=enhet,{GROUPS}", {**group("enhet").attrs, "entryuuid": ("u-1",)})
    held = mirror(user("anna", 1), old_unit)
    new_unit = RawEntry(f"cn=unit,{GROUPS}", {**group("unit").attrs, "entryuuid": ("u-1",)})
    events = held.replace_all(mirror(user("anna", 1), new_unit))
    assert sorted((e.name, e.change) for e in events if isinstance(e, DirectoryGroup)) == [
        ("enhet", "renamed"),
        ("unit", "renamed"),
    ]
    assert not any(isinstance(e, DirectoryUser) for e in events)


def test_expiry_is_rejudged_when_the_day_changes() -> None:
    day = [TODAY]
    held = DirectoryMirror(SCHEMA, source="t", referential_integrity=True, today=lambda: day[0])
    held.load([user("anna", 1, shadowexpire=(str(TODAY + 1),))])
    assert held.refresh_day() == []
    day[0] += 1
    [event] = held.refresh_day()
    assert isinstance(event, DirectoryUser) and event.change == "disabled"


# ---------------------------------------------------------------- plumbing


def test_every_configurable_mode_is_registered() -> None:
    mode_type = LdapCollectorConfig.model_fields["mode"].annotation
    assert set(get_args(mode_type)) == set(CHANGE_MODES)


def test_backoff_doubles_up_to_the_cap() -> None:
    backoff = Backoff(first=0.5, cap=3, jitter=lambda: 1.0)  # the top of each jitter range
    assert [backoff.failed() for _ in range(5)] == [0.5, 1.0, 2.0, 3, 3]
    backoff.reset()
    assert backoff.failed() == 0.5
    low = Backoff(first=0.5, cap=3, jitter=lambda: 0.0)  # the bottom: half of each step
    assert [low.failed() for _ in range(4)] == [0.25, 0.5, 1.0, 1.5]


def test_backoff_defaults_to_a_low_cap_and_survives_a_long_outage() -> None:
    backoff = Backoff()
    delays = [backoff.failed() for _ in range(5000)]  # hours of outage: the exponent must not overflow
    assert max(delays) <= 5.0
    assert all(2.5 <= d <= 5.0 for d in delays[10:])
    assert len({round(d, 6) for d in delays[10:]}) > 1, "jittered"
    assert config().backoff_max_seconds == 5.0


def test_password_sources_and_errors_never_show_it(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    assert read_password(config(bind_dn="cn=r", password_file=secret)) == "s3cret"
    assert read_password(config(bind_dn="cn=r", password_env="PW"), {"PW": "s3cret"}) == "s3cret"
    assert read_password(config()) is None
    with pytest.raises(ConfigError, match="PW is not set"):
        read_password(config(bind_dn="cn=r", password_env="PW"), {})
    with pytest.raises(ConfigError, match="password_file"):
        read_password(config(bind_dn="cn=r", password_file=tmp_path / "missing"))


def test_config_rejects_a_bind_without_a_password_source_and_relative_files() -> None:
    with pytest.raises(ValueError, match="password_file or password_env"):
        config(bind_dn="cn=r")
    with pytest.raises(ValueError, match="not both"):
        config(bind_dn="cn=r", password_env="A", password_file="/x")
    with pytest.raises(ValueError, match="absolute"):
        config(bind_dn="cn=r", password_file="pw.txt")
    with pytest.raises(ValueError, match="mode"):
        config(mode="dirsync-someday")


def test_a_long_outage_logs_each_early_retry_then_one_line_a_minute(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    collector = LdapCollector(config(), Recorder(), state_path=tmp_path / "s.json", monotonic=lambda: now[0])
    caplog.set_level(logging.DEBUG, logger="permwatch.collectors.ldap")
    down = LDAPSocketOpenError("connection refused")
    for failures in range(1, 40):  # about three minutes at the 5 s cap
        collector._log_retry(down, 5.0, failures)
        now[0] += 5.0 if failures > 6 else 1.0
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 6 + 2, lines
    assert all("unavailable" in line and "retrying in 5.0 s" in line for line in lines)
    assert [line.rsplit(", ", 1)[-1] for line in lines[6:]] == ["attempt 19", "attempt 31"]  # a minute apart
    limit = DirectoryLimitExceeded(where="ldap://x:389", account="cn=r", limit="size limit", base="ou=p", returned=500)
    now[0] += 60
    collector._log_retry(limit, 5.0, 40)
    assert caplog.records[-1].levelno == logging.ERROR and "size limit for cn=r" in caplog.records[-1].getMessage()


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def flush(self) -> None:
        pass
