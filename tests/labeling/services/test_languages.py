"""labeling.services.languages: the real detector (fastText lid.176), the stored Item.language, the recommendation."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from labeling.models import Item, Project
from labeling.services.items_import import items_import
from labeling.services.languages import (
    MIN_ITEMS_FOR_RECOMMENDATION,
    UNDETERMINED,
    detect_language,
    language_mix,
    recommended_embedder_for_mix,
)
from tests.conftest import SMS_TAXONOMY
from tests.factories import ProjectFactory

SAMPLES = {
    "en": "Congratulations, you have been selected for a cash prize. Reply now to claim it.",
    "es": "Felicidades, has sido seleccionado para un premio en efectivo. Responde ahora para reclamarlo.",
    "ar": "تهانينا، لقد تم اختيارك للحصول على جائزة نقدية. رد الآن للمطالبة بها.",
    "he": "מזל טוב, נבחרת לקבל פרס כספי. השב עכשיו כדי לקבל אותו.",
    "hi": "बधाई हो, आपको नकद पुरस्कार के लिए चुना गया है। इसे पाने के लिए अभी जवाब दें।",
    "zh": "恭喜，您已被选中获得现金奖励。请立即回复领取。",
    "ru": "Поздравляем, вы выбраны для получения денежного приза. Ответьте сейчас, чтобы получить его.",
    "id": "Selamat, Anda terpilih untuk mendapatkan hadiah uang tunai. Balas sekarang untuk mengklaimnya.",
    "fa": "تبریک می گوییم، شما برای دریافت جایزه نقدی انتخاب شده اید. همین حالا پاسخ دهید.",
}


@pytest.mark.parametrize("code", sorted(SAMPLES))
def test_detects_the_language_of_each_script(code: str) -> None:
    assert detect_language(SAMPLES[code]) == code


def test_text_without_letters_or_with_a_newline_first() -> None:
    assert detect_language("🙂🙂 12345 !!!") == UNDETERMINED
    assert detect_language("") == UNDETERMINED
    # fastText reads one line; a newline must not cut the text to its first (empty) line.
    assert detect_language("\n\n" + SAMPLES["es"]) == "es"
    # Only the opening DETECT_CHARS characters are read: a long text costs what a short one does.
    assert detect_language(SAMPLES["ar"] + " " + "hello world " * 500) == "ar"


def test_language_mix_orders_by_count_and_drops_the_unknown() -> None:
    assert language_mix({"en": 3, "ar": 5, "": 4, None: 2, "hi": 3}) == {"ar": 5, "en": 3, "hi": 3}
    assert list(language_mix({"en": 3, "ar": 5, "hi": 3})) == ["ar", "en", "hi"]


def test_recommendation_rule() -> None:
    enough = MIN_ITEMS_FOR_RECOMMENDATION
    assert recommended_embedder_for_mix({"en": enough - 4, "ar": 4}, "minilm") == "multilingual"  # 20% is enough
    assert recommended_embedder_for_mix({"en": 81, "ar": 19}, "minilm") is None  # 19% is not
    assert recommended_embedder_for_mix({"ar": enough - 1}, "minilm") is None  # too few items to say
    assert recommended_embedder_for_mix({"ar": 100}, "static") == "multilingual"
    assert recommended_embedder_for_mix({"ar": 100}, "multilingual") is None  # already there
    assert recommended_embedder_for_mix({"ar": 100}, "hashing") is None  # a test project: leave it


def _import(project: Project, rows: list[dict[str, Any]]) -> Any:
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    return items_import(actor=None, project=project, source=io.BytesIO(body), filename="x.jsonl")


@pytest.mark.django_db
def test_import_stores_the_language_and_a_changed_text_is_detected_again() -> None:
    project = ProjectFactory(slug="lang", taxonomy=SMS_TAXONOMY)
    rows = [{"external_id": code, "text": text} for code, text in SAMPLES.items()]
    summary = _import(project, rows)
    assert summary.report()["languages"] == {
        "counts": {code: 1 for code in sorted(SAMPLES)}, "undetermined": 0, "recommended_embedder": None,
    }  # nine rows: too few to recommend anything
    assert dict(Item.objects.filter(project=project).values_list("external_id", "language")) == {
        code: code for code in SAMPLES}
    # The Spanish item's text becomes Hebrew: updated, and its language follows.
    again = _import(project, [{"external_id": "es", "text": SAMPLES["he"]},
                              {"external_id": "en", "text": SAMPLES["en"]}])
    assert (again.created, again.updated, again.unchanged) == (0, 1, 1)
    assert Item.objects.get(project=project, external_id="es").language == "he"
    assert Item.objects.get(project=project, external_id="en").language == "en"


@pytest.mark.django_db
def test_import_recommends_the_multilingual_tier_for_a_mostly_foreign_file() -> None:
    project = ProjectFactory(slug="lang2", taxonomy=SMS_TAXONOMY)
    rows = [{"external_id": f"{code}{i}", "text": f"{text} {i}"} for i in range(3) for code, text in SAMPLES.items()]
    report = _import(project, rows).report()["languages"]
    assert report["recommended_embedder"] == "multilingual"
    assert report["counts"] == {code: 3 for code in sorted(SAMPLES)}


def test_han_without_kana_is_chinese_and_with_kana_japanese() -> None:
    # The compressed model alone calls this short Chinese sentence Japanese (p = 0.70).
    assert detect_language("恭喜，您已被选中获得现金奖励。请立即回复领取。") == "zh"
    assert detect_language("おめでとうございます。現金賞品に当選しました。今すぐ返信してください。") == "ja"
