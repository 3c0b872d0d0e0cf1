"""An INVITE must name its remote target: exactly one Contact URI (RFC 3261 §8.1.1.8).

Without one the dialog it would create has nowhere to send the BYE; `Contact: *` only means
something in a REGISTER. Either is 400 with a Warning that says why, before any call exists.
"""

from __future__ import annotations

import pytest

from raw_phone import answer_to, finish, still_serving


def contact_variants(phone) -> dict[str, list[str] | None]:
    host, port = phone.addr
    return {"none": None, "star": ["*"], "blank": [""], "star-spaced": [" * "],
            "two": [f"<sip:a@{host}:{port}>", f"<sip:b@{host}:{port}>"],
            "star-and-uri": ["*", f"<sip:a@{host}:{port}>"]}


@pytest.mark.parametrize("variant", ["none", "star", "blank", "star-spaced", "two",
                                     "star-and-uri"])
@pytest.mark.parametrize("auto", [False, True])
def test_invite_without_a_single_contact_uri_gets_400(net, uas, phone, variant, auto) -> None:
    uas.start_serving(auto_answer=auto)
    invite = phone.request("INVITE")
    value = contact_variants(phone)[variant]
    if value is None:
        del invite.headers["contact"]
    else:
        invite.headers["contact"] = value
    phone.received()
    phone.send(invite)
    net.pump()
    answers = phone.received()
    assert [r.status for r in answers] == [400]
    assert "8.1.1.8" in (answers[0].get("warning") or "")
    assert answers[0].to.tag  # a final answer to an INVITE carries our tag
    assert not uas.calls and len(uas.incoming.pending) == 0
    still_serving(net, phone)
    finish(net)


def test_reinvite_without_contact_gets_400_and_the_call_stays_up(net, uas, phone) -> None:
    uas.start_serving(auto_answer=True)
    invite, ok = phone.answered_invite()
    phone.send(phone.follow_up("ACK", invite, ok, cseq=1))
    again = phone.follow_up("INVITE", invite, ok, cseq=2)
    del again.headers["contact"]
    assert answer_to(net, phone, again.to_bytes()) == [400]
    (session,) = uas.calls
    assert session.established
    finish(net)


def test_register_style_star_is_not_refused_outside_invite(net, uas, phone) -> None:
    options = phone.request("OPTIONS")
    options.headers["contact"] = ["*"]
    assert answer_to(net, phone, options.to_bytes()) == [200]
    finish(net)
