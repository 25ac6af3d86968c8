"""PII masking in non-Latin text: e-mails, phone numbers in other scripts' digits, and links, inside Arabic,
Persian, Hebrew, Hindi, Chinese and Japanese sentences (labeling/services/privacy.py, RE2 over UTF-8 bytes)."""

from __future__ import annotations

import pytest

from labeling.services.privacy import DETECTORS, Masker, _compiled


def masker() -> Masker:
    return Masker(_compiled(tuple(DETECTORS), ()))


@pytest.mark.parametrize(("text", "masked"), [
    # Arabic, Arabic-Indic digits, an ASCII address in right-to-left text.
    ("اتصل بي على ٠٥٠١٢٣٤٥٦٧ أو راسلني ali.hassan@example.com شكراً",
     "اتصل بي على [phone] أو راسلني [email] شكراً"),
    # An international number in Arabic-Indic digits glued to the word before it, and a link followed by the
    # Arabic comma: the link stops there.
    ("رقمي+٩٦٦ ٥٠ ١٢٣ ٤٥٦٧ والموقع https://example.com/ar،شكرا", "رقمي[phone] والموقع [url]،شكرا"),
    # Persian: Extended Arabic-Indic digits.
    ("شماره من ۰۹۱۲۳۴۵۶۷۸۹ است", "شماره من [phone] است"),
    # Hindi: Devanagari digits; an address inside Devanagari text.
    ("मुझे ९८७६५४३२१० पर कॉल करें या rahul@example.in पर लिखें", "मुझे [phone] पर कॉल करें या [email] पर लिखें"),
    # Chinese: full-width digits, full-width comma and ideographic full stop after the link.
    ("联系我：zhang.wei@example.cn，电话１３８１２３４５６７８，网址https://example.cn/x。谢谢",
     "联系我：[email]，电话[phone]，网址[url]。谢谢"),
    # Japanese: full-width hyphens between full-width digits.
    ("お電話は０９０－１２３４－５６７８まで", "お電話は[phone]まで"),
    # Hebrew with ASCII digits; the Hebrew prefix glued to the address goes with it (broad on purpose).
    ("שלחו מייל ל-dana@example.co.il או התקשרו 052-1234567", "שלחו מייל [email] או התקשרו [phone]"),
    # An address whose local part and domain are in Devanagari.
    ("ईमेल: राहुल@उदाहरण.भारत", "ईमेल: [email]"),
])
def test_pii_in_other_scripts_is_masked(text: str, masked: str) -> None:
    assert masker().text(text) == masked


def test_dates_and_short_numbers_in_other_digits_are_left_alone() -> None:
    # A date in Arabic-Indic digits, a six-digit code, an ASCII word with digits: none is a phone number.
    text = "الموعد ٢٠٢٤-٠١-٣١ والرمز ١٢٣٤٥٦ و order12345678x"
    assert masker().text(text) == text
