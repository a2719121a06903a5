"""What the reader-message strip under the alarm banner says (``app.ui.reader_banner.banner_text``)."""

from __future__ import annotations


def test_banner_names_the_reader_shows_the_oldest_open_message_and_hides_other_cases():
    from app.ui.reader_banner import banner_text

    inbox = {"type": "inbox", "case_id": "C1", "messages": [
        {"id": "a", "from": "Dr Anna Rossi", "reader": "anna.rossi", "kind": "message", "text": "old",
         "acknowledged": True},
        {"id": "b", "from": "Dr Anna Rossi", "reader": "anna.rossi", "kind": "interpretation",
         "text": "vagal amplitude 45 %: please release retraction", "acknowledged": False},
        {"id": "c", "from": "", "reader": "ben.kim", "kind": "message", "text": "next", "acknowledged": False}]}
    text, mid = banner_text(inbox, "C1")
    assert mid == "b" and text.startswith("Interpretation from Dr Anna Rossi (remote reader): vagal amplitude")
    assert text.endswith("(+1 more)")
    assert banner_text(inbox, "C2") == ("", "")  # another case's messages are not shown
    assert banner_text(None, "C1") == ("", "")
    inbox["messages"][1]["acknowledged"] = True
    text, mid = banner_text(inbox, "C1")
    assert mid == "c" and text.startswith("Message from ben.kim") and "more" not in text
