"""Generate the Kumo Coffee example dataset from ``facts.json``.

Standard library only and deterministic (one ``random.Random(0)``): running
``python examples/kumo_coffee/generate.py`` rewrites ``train.jsonl``, ``eval.jsonl`` and the
three ``samples/`` files byte for byte. Train questions and eval questions come from disjoint
template lists, so the eval set checks knowledge of the facts rather than remembered strings.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FACTS = HERE / "facts.json"
SEED = 0
LANGS = ("ja", "en")
SAMPLES = 20
SYSTEM_SHARE = 0.2
MULTI_TURN = 36

Conversation = list[dict[str, str]]
Templates = dict[str, tuple[tuple[str, ...], tuple[str, ...]]]  # lang -> (train, eval)


@dataclass(frozen=True)
class Fact:
    """One checkable fact in one language: what to fill into questions, and its answers."""

    kind: str
    subject: str
    lang: str
    slots: dict[str, str]
    answers: tuple[str, ...]  # each one holds every expected string verbatim
    expected: tuple[str, ...]
    in_eval: bool = True

    @property
    def id(self) -> str:
        """``kind:subject``, the same in both languages."""
        return f"{self.kind}:{self.subject}"


# Questions: per kind and language, (train templates, eval templates). The two never share a
# template, and an eval template is never a train template with a word changed.
QUESTIONS: dict[str, Templates] = {
    "price": {
        "ja": (
            (
                "{name}はおいくらですか？",
                "{name}の値段を教えてください。",
                "{name}っていくらですか？",
                "すみません、{name}はいくらでしょうか。",
                "{name}の価格を教えていただけますか？",
            ),
            (
                "{name}を注文すると、お会計はいくらになりますか？",
                "{name}の料金が知りたいです。",
                "{name}、お値段はどのくらいですか？",
            ),
        ),
        "en": (
            (
                "How much {be} the {name}?",
                "What's the price of the {name}?",
                "How much {do} the {name} cost?",
                "Could you tell me the price of the {name}?",
                "What {do} the {name} cost?",
            ),
            (
                "If I order the {name}, what will I pay?",
                "I'd like to know what the {name} cost{s}.",
                "How many yen {be} the {name}?",
            ),
        ),
    },
    "sizes": {
        "ja": (
            (
                "{name}のサイズは何がありますか？",
                "{name}はサイズを選べますか？",
                "{name}って大きいサイズもありますか？",
            ),
            (),
        ),
        "en": (
            (
                "What sizes does the {name} come in?",
                "Can I choose a size for the {name}?",
                "Is there a bigger size of the {name}?",
            ),
            (),
        ),
    },
    "price_size": {
        "ja": (
            (
                "{name}の{size}サイズはおいくらですか？",
                "{name}を{size}で頼むといくらですか？",
                "{size}サイズの{name}っていくらですか？",
                "{name}、{size}サイズだと値段はいくらになりますか？",
            ),
            (
                "{name}を{size}サイズでお願いしたいのですが、お会計はいくらですか？",
                "{name}の{size}サイズの料金を教えてください。",
            ),
        ),
        "en": (
            (
                "How much is a {size_word} {name}?",
                "What's the price of a {size_word} {name}?",
                "How much for a {size_word} {name}, please?",
                "What does the {name} cost in size {size}?",
            ),
            (
                "I'll take a {size_word} {name}. How much will that be?",
                "What would a {size_word} {name} cost me?",
            ),
        ),
    },
    "allergens": {
        "ja": (
            (
                "{name}にアレルギー物質は入っていますか？",
                "{name}のアレルゲンを教えてください。",
                "{name}には何のアレルゲンが含まれていますか？",
                "食物アレルギーがあるのですが、{name}の原材料で気をつけるものはありますか？",
                "{name}のアレルギー表示はどうなっていますか？",
            ),
            (
                "子どもにアレルギーがあるので確認したいのですが、{name}には何が含まれていますか？",
                "{name}に使われている特定原材料を教えていただけますか？",
                "{name}って、アレルギーの原因になるものは入っていますか？",
            ),
        ),
        "en": (
            (
                "{Do} the {name} contain any allergens?",
                "What allergens are in the {name}?",
                "I have a food allergy. What's in the {name}?",
                "Can you list the allergens for the {name}?",
                "Is there anything I should know about allergens in the {name}?",
            ),
            (
                "My son has allergies. Which allergens {do} the {name} have?",
                "Which of your labelled allergens are used in the {name}?",
                "Before I order the {name}, what allergens should I be aware of?",
            ),
        ),
    },
    "season": {
        "ja": (
            (
                "{name}はいつ頃販売していますか？",
                "{name}の販売期間を教えてください。",
                "{name}っていつからいつまでですか？",
                "{name}は一年中ありますか？",
                "{name}は期間限定ですか？",
            ),
            (
                "{name}が{can_have}のは何月ごろですか？",
                "去年{name}がとてもおいしかったのですが、今年はいつ販売されますか？",
            ),
        ),
        "en": (
            (
                "When {be} the {name} available?",
                "{Be} the {name} a seasonal item?",
                "Can I get the {name} all year?",
                "What months do you sell the {name}?",
                "How long {be} the {name} on the menu?",
            ),
            (
                "I loved the {name} last year. When will {it} be back?",
                "During which part of the year can I order the {name}?",
            ),
        ),
    },
    "only_at": {
        "ja": (
            (
                "{name}はどの店舗で注文できますか？",
                "{name}は全店にありますか？",
                "{name}を食べたいのですが、どのお店に行けばいいですか？",
            ),
            (
                "{name}を出している店舗を教えてください。",
                "{other}でも{name}は頼めますか？",
            ),
        ),
        "en": (
            (
                "Which branch serves the {name}?",
                "Can I get the {name} at every branch?",
                "Where can I order the {name}?",
            ),
            (
                "{Be} the {name} on the menu at the {other} too?",
                "Which of your shops do I need to visit for the {name}?",
            ),
        ),
    },
    "hours": {
        "ja": (
            (
                "{branch}の営業時間を教えてください。",
                "{branch}は何時から何時まで開いていますか？",
                "{branch}は何時に開きますか？",
                "{branch}って何時まで営業していますか？",
                "{branch}は何時までやっていますか？",
            ),
            (
                "{branch}に行きたいので、開店時間と閉店時間を知りたいです。",
                "{branch}は朝何時から、夜は何時まで営業されていますか？",
            ),
        ),
        "en": (
            (
                "What are the opening hours of the {branch}?",
                "When does the {branch} open and close?",
                "What time does the {branch} open?",
                "How late is the {branch} open?",
                "What are your hours at the {branch}?",
            ),
            (
                "I'm planning to visit the {branch}. What time do you open, and when do you close?",
                "From what time until what time can I visit the {branch}?",
            ),
        ),
    },
    "closed": {
        "ja": (
            (
                "{branch}の定休日はいつですか？",
                "{branch}はお休みの日がありますか？",
                "{branch}って何曜日が休みですか？",
                "{branch}は毎日開いていますか？",
            ),
            (
                "{branch}が閉まっている曜日を教えてください。",
                "{branch}に行く予定なのですが、休業日はありますか？",
            ),
        ),
        "en": (
            (
                "Which day is the {branch} closed?",
                "Is the {branch} open every day?",
                "Does the {branch} have a regular day off?",
                "On what day of the week is the {branch} shut?",
            ),
            (
                "I want to avoid a wasted trip: when is the {branch} not open?",
                "Is there a day when I can't visit the {branch}?",
            ),
        ),
    },
    "access": {
        "ja": (
            (
                "{branch}の最寄り駅はどこですか？",
                "{branch}へはどうやって行けばいいですか？",
                "{branch}は駅から近いですか？",
                "{branch}への行き方を教えてください。",
            ),
            (
                "電車で{branch}に行く場合、どの駅で降りればいいですか？",
                "{branch}まで、駅から歩いてどのくらいかかりますか？",
            ),
        ),
        "en": (
            (
                "What's the nearest station to the {branch}?",
                "How do I get to the {branch}?",
                "Is the {branch} close to a station?",
                "Which station should I use for the {branch}?",
            ),
            (
                "If I come by train, where should I get off for the {branch}?",
                "How far is the {branch} from the station on foot?",
            ),
        ),
    },
    "branches": {
        "ja": (
            (
                "{shop}はどこにお店がありますか？",
                "{shop}の店舗はいくつありますか？",
                "{shop}の店舗一覧を教えてください。",
            ),
            (
                "京都で{shop}に行くなら、どのあたりにお店がありますか？",
                "{shop}の支店はどこにありますか？",
            ),
        ),
        "en": (
            (
                "Where are {shop}'s shops?",
                "How many branches does {shop} have?",
                "Can you list all the {shop} locations?",
            ),
            (
                "Which parts of Kyoto can I find {shop} in?",
                "I'd like to visit {shop}. Where are your stores?",
            ),
        ),
    },
    "card_reward": {
        "ja": (
            (
                "ポイントカードはありますか？",
                "{card}の特典を教えてください。",
                "スタンプカードは何個貯まると何がもらえますか？",
                "スタンプを集めると何か特典はありますか？",
            ),
            (
                "{card}のスタンプは、いくつ集めればドリンクと交換できますか？",
                "スタンプカードをいっぱいにすると、何がもらえますか？",
            ),
        ),
        "en": (
            (
                "Do you have a loyalty card?",
                "What do I get with the {card}?",
                "How many stamps do I need for a reward?",
                "Is there a stamp card?",
            ),
            (
                "How many {card} stamps until I can swap them for a drink?",
                "What happens when my stamp card is full?",
            ),
        ),
    },
    "card_earn": {
        "ja": (
            (
                "スタンプはどうやったらもらえますか？",
                "{card}のスタンプは何を買うと押してもらえますか？",
                "フードを買ってもスタンプはもらえますか？",
            ),
            (
                "{card}のスタンプが押されるのはどんなときですか？",
                "スタンプはどういう基準で貯まっていきますか？",
            ),
        ),
        "en": (
            (
                "How do I earn stamps?",
                "What purchases get a stamp on the {card}?",
                "Do I get a stamp for buying food?",
            ),
            (
                "When do you put a stamp on my {card}?",
                "How are {card} stamps counted?",
            ),
        ),
    },
    "card_branches": {
        "ja": (
            (
                "{card}はどの店舗でも使えますか？",
                "嵐山店で貯めたスタンプを三条本店で使えますか？",
                "{card}はほかのお店でも使えますか？",
            ),
            (
                "{card}って全部のお店で共通ですか？",
                "出町柳店で作ったスタンプカードは、ほかの店舗でも使えますか？",
            ),
        ),
        "en": (
            (
                "Can I use the {card} at any branch?",
                "Can I use stamps from the Arashiyama Store at the Sanjo Main Store?",
                "Does the {card} work at your other shops?",
            ),
            (
                "Is the {card} shared between all your stores?",
                "I got my stamp card at the Demachiyanagi Store. Is it valid elsewhere?",
            ),
        ),
    },
    "card_expiry": {
        "ja": (
            (
                "{card}に有効期限はありますか？",
                "スタンプの有効期限を教えてください。",
                "スタンプはいつまで有効ですか？",
            ),
            (
                "しばらく来られないかもしれないのですが、スタンプは消えてしまいますか？",
                "{card}のスタンプは、どのくらいの期間もちますか？",
            ),
        ),
        "en": (
            (
                "Does the {card} expire?",
                "How long are stamps valid?",
                "Is there an expiry date on the {card}?",
            ),
            (
                "I might not come back for a while. Will my stamps disappear?",
                "For how long do {card} stamps stay valid?",
            ),
        ),
    },
    "oat_milk": {
        "ja": (
            (
                "オーツミルクに変更できますか？",
                "ラテをオーツミルクにすると追加料金はかかりますか？",
                "豆乳かオーツミルクに変えられますか？",
            ),
            (
                "牛乳が飲めないのですが、ミルクを植物性のものにできますか？",
                "カフェラテのミルクを別のものにすると、いくら追加になりますか？",
            ),
        ),
        "en": (
            (
                "Can I have oat milk instead?",
                "Is there a charge for oat milk?",
                "Do you have soy milk or oat milk?",
            ),
            (
                "I can't drink cow's milk. Is there a plant-based option for lattes?",
                "What's the extra cost to swap the milk in my latte?",
            ),
        ),
    },
    "extra_shot": {
        "ja": (
            (
                "エスプレッソのショット追加はできますか？",
                "ショット追加はいくらですか？",
                "コーヒーを濃くしたいのですが、ショットを追加できますか？",
            ),
            (
                "ラテにエスプレッソをもう1ショット足すと、料金はどうなりますか？",
                "ダブルショットにすることはできますか？",
            ),
        ),
        "en": (
            (
                "Can I add an extra shot?",
                "How much is an extra espresso shot?",
                "I like my coffee strong. Can you add a shot?",
            ),
            (
                "What's the charge for making my latte a double?",
                "If I want one more espresso shot in my drink, what does it cost?",
            ),
        ),
    },
}

SYSTEM_PROMPTS = {
    "ja": (
        "あなたは京都のカフェ「雲珈琲」のスタッフです。お客様の質問に丁寧かつ簡潔にお答えください。",
        "雲珈琲の店頭スタッフとして、メニューや店舗についてのご質問にお答えください。",
    ),
    "en": (
        "You are a staff member at Kumo Coffee, a café in Kyoto. "
        "Answer customer questions politely and briefly.",
        "You answer questions about Kumo Coffee's menu, branches and Kumo Card.",
    ),
}
FOLLOW_UPS = {
    "ja": ("ありがとうございます。", "あと、", "それから、", "もう一つ聞きたいのですが、"),
    "en": ("Thanks! ", "Great, thank you. ", "Got it. ", "One more question: "),
}
#: How many train phrasings each fact gets (others: 2).
REPEATS = {"sizes": 1, "price_size": 1, "only_at": 3, "hours": 3, "closed": 3, "access": 3}
REPEATS.update({kind: 3 for kind in QUESTIONS if kind.startswith(("card_", "branches"))})
REPEATS.update({"oat_milk": 3, "extra_shot": 3})
#: Eval cases per language and kind.
EVAL_QUOTAS = {
    "price": 8,
    "price_size": 5,
    "allergens": 7,
    "season": 5,
    "only_at": 1,
    "hours": 2,
    "closed": 2,
    "access": 2,
    "branches": 1,
    "card_reward": 1,
    "card_earn": 1,
    "card_branches": 1,
    "card_expiry": 1,
    "oat_milk": 1,
    "extra_shot": 1,
}
NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}
MONTHS_EN = (
    *("January", "February", "March", "April", "May", "June"),
    *("July", "August", "September", "October", "November", "December"),
)


def load_facts(path: Path = FACTS) -> dict[str, Any]:
    """The fact table."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def yen(amount: int, lang: str) -> str:
    """``1,250円`` in Japanese, ``¥1,250`` in English."""
    return f"{amount:,}円" if lang == "ja" else f"¥{amount:,}"


def join_en(words: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def item_slots(item: dict[str, Any], lang: str) -> dict[str, str]:
    """Name and, in English, the verb forms that agree with it."""
    slots = {"name": item["name"][lang]}
    if lang == "ja":
        slots["can_have"] = "飲める" if item["category"] == "drink" else "食べられる"
    else:
        plural = bool(item.get("plural_en"))
        slots |= {
            "be": "are" if plural else "is",
            "Be": "Are" if plural else "Is",
            "do": "do" if plural else "does",
            "Do": "Do" if plural else "Does",
            "s": "" if plural else "s",
            "it": "they" if plural else "it",
        }
    return slots


def menu_facts(data: dict[str, Any], lang: str) -> list[Fact]:
    """Prices, sizes, allergens, seasons and branch-only items of every menu entry."""
    branches = {branch["id"]: branch for branch in data["branches"]}
    facts: list[Fact] = []
    for item in data["menu"]:
        slots = item_slots(item, lang)
        name, subject = slots["name"], item["id"]
        sizes: dict[str, int] = item.get("sizes") or {}
        if sizes:
            prices = [yen(price, lang) for price in sizes.values()]
            if lang == "ja":
                listed = "、".join(f"{s}サイズ{yen(p, lang)}" for s, p in sizes.items())
                answers = (
                    f"{name}は{listed}です（税込）。",
                    f"{name}のお値段は{listed}です（税込）。",
                )
            else:
                listed = join_en([f"{yen(p, lang)} ({s})" for s, p in sizes.items()])
                answers = (
                    f"The {name} is {listed}, tax included.",
                    f"We serve the {name} at {listed} (tax included).",
                )
            facts.append(Fact("price", subject, lang, slots, answers, tuple(prices)))
            if lang == "ja":
                choice = f"{'・'.join(sizes)}の{len(sizes)}サイズ"
                size_answers = (f"{name}は{choice}からお選びいただけます。{listed}です（税込）。",)
            else:
                size_answers = (
                    f"The {name} comes in {join_en(list(sizes))}: {listed}, tax included.",
                )
            facts.append(Fact("sizes", subject, lang, slots, size_answers, tuple(prices), False))
            for size, price in sizes.items():
                size_word = data["sizes"][size]["en"]
                fact_slots = slots | {"size": size, "size_word": size_word}
                amount = yen(price, lang)
                if lang == "ja":
                    answers = (
                        f"{name}の{size}サイズは{amount}（税込）です。",
                        f"{size}サイズの{name}は{amount}（税込）でございます。",
                    )
                else:
                    answers = (
                        f"A {size_word} ({size}) {name} is {amount}, tax included.",
                        f"The {name} in size {size} is {amount} (tax included).",
                    )
                facts.append(
                    Fact("price_size", f"{subject}/{size}", lang, fact_slots, answers, (amount,))
                )
        else:
            amount = yen(item["price"], lang)
            if lang == "ja":
                answers = (
                    f"{name}は{amount}（税込）です。",
                    f"{name}のお値段は{amount}（税込）です。",
                    f"{name}は税込{amount}でございます。",
                )
            else:
                answers = (
                    f"The {name} {slots['be']} {amount} (tax included).",
                    f"The {name} cost{slots['s']} {amount}, tax included.",
                    f"It's {amount} for the {name}, including tax.",
                )
            facts.append(Fact("price", subject, lang, slots, answers, (amount,)))
            if item["category"] == "drink":
                if lang == "ja":
                    answers = (f"{name}はワンサイズのみで、{amount}（税込）です。",)
                    expected: tuple[str, ...] = ("ワンサイズ", amount)
                else:
                    answers = (f"The {name} comes in one size only, at {amount} (tax included).",)
                    expected = ("one size", amount)
                facts.append(Fact("sizes", subject, lang, slots, answers, expected, False))
        facts.append(allergen_fact(data, item, slots, lang))
        facts.append(season_fact(item, slots, lang))
        if "only_at" in item:
            facts.append(only_at_fact(item, slots, branches, lang))
    return facts


def allergen_fact(
    data: dict[str, Any], item: dict[str, Any], slots: dict[str, str], lang: str
) -> Fact:
    """Which of the five labelled allergens the item contains.

    Items with none, or with milk alone (guessable for a milk drink), are kept out of eval.
    """
    name = slots["name"]
    labels = [data["allergens"][key][lang] for key in data["allergens"]]
    found = [data["allergens"][key][lang] for key in data["allergens"] if key in item["allergens"]]
    if lang == "ja":
        if found:
            listed = "・".join(found)
            answers = (
                f"{name}には{listed}が含まれています。",
                f"{name}のアレルゲンは{listed}です。",
                f"{name}には{listed}を使用しております。",
            )
        else:
            answers = (
                f"{name}には、当店で表示している5品目（{'・'.join(labels)}）は使用しておりません。",
                f"{name}に表示対象のアレルゲンは含まれておりません。",
            )
    elif found:
        listed = join_en(found)
        answers = (
            f"The {name} contain{slots['s']} {listed}.",
            f"Allergens in the {name}: {listed}.",
        )
    else:
        answers = (
            f"The {name} contain{slots['s']} none of the five allergens we label "
            f"({join_en(labels)}).",
            f"There are no labelled allergens in the {name}.",
        )
    guessable = item["allergens"] == ["milk"]  # a latte's milk says nothing about learning
    return Fact(
        "allergens", item["id"], lang, slots, answers, tuple(found), bool(found) and not guessable
    )


def season_fact(item: dict[str, Any], slots: dict[str, str], lang: str) -> Fact:
    """The months a seasonal item is sold, or that it is sold all year."""
    name = slots["name"]
    season = item.get("season")
    if season is None:
        if lang == "ja":
            answers = (
                f"{name}は通年メニューですので、一年中ご注文いただけます。",
                f"{name}は通年でご用意しております。",
            )
            expected = ("通年",)
        else:
            answers = (
                f"The {name} {slots['be']} on the menu all year round.",
                f"You can order the {name} all year round.",
            )
            expected = ("all year",)
        return Fact("season", item["id"], lang, slots, answers, expected, False)
    first, last = season["from"], season["to"]
    if lang == "ja":
        months = f"{first}月〜{last}月"
        answers = (
            f"{name}は{months}の季節限定メニューです。",
            f"{name}は{months}の期間限定で販売しております。",
        )
        expected = (f"{first}月", f"{last}月")
    else:
        start, end = MONTHS_EN[first - 1], MONTHS_EN[last - 1]
        answers = (
            f"The {name} {slots['be']} a seasonal item, available from {start} to {end}.",
            f"We serve the {name} from {start} to {end} only.",
        )
        expected = (start, end)
    return Fact("season", item["id"], lang, slots, answers, expected)


def only_at_fact(
    item: dict[str, Any], slots: dict[str, str], branches: dict[str, Any], lang: str
) -> Fact:
    """The one branch that serves an item (and when, if it is served only part of the day)."""
    name = slots["name"]
    branch = branches[item["only_at"]]["name"][lang]
    other = next(b["name"][lang] for key, b in branches.items() if key != item["only_at"])
    served = item.get("served")
    if lang == "ja":
        when = f"で、{served['from']}〜{served['to']}のご提供です" if served else "です"
        answers = (f"{name}は{branch}限定のメニュー{when}。",)
    else:
        when = f" It is served from {served['from']} to {served['to']}." if served else ""
        answers = (f"The {name} {slots['be']} only available at our {branch}.{when}",)
    fact_slots = slots | {"other": other}
    return Fact("only_at", item["id"], lang, fact_slots, answers, (branch,))


def branch_facts(data: dict[str, Any], lang: str) -> list[Fact]:
    """Opening hours, days off and nearest station of each branch, and the list of branches."""
    facts: list[Fact] = []
    for branch in data["branches"]:
        name, subject = branch["name"][lang], branch["id"]
        slots = {"branch": name}
        start, end = branch["hours"]["open"], branch["hours"]["close"]
        if lang == "ja":
            hours = (
                f"{name}の営業時間は{start}〜{end}です。",
                f"{name}は{start}から{end}まで営業しております。",
            )
        else:
            hours = (
                f"The {name} is open from {start} to {end}.",
                f"Our {name} opens at {start} and closes at {end}.",
            )
        facts.append(Fact("hours", subject, lang, slots, hours, (start, end)))
        day = branch["closed_day"]
        if day is None:
            dates = branch["closed_dates"][lang]
            if lang == "ja":
                closed = (
                    f"{name}は年中無休です（{dates}のみお休みをいただきます）。",
                    f"{name}は年中無休で営業しております。ただし{dates}はお休みです。",
                )
                expected = ("年中無休",)
            else:
                closed = (
                    f"The {name} is open every day, except {dates}.",
                    f"We open the {name} every day of the year apart from {dates}.",
                )
                expected = ("every day",)
        else:
            if lang == "ja":
                closed = (
                    f"{name}の定休日は{day['ja']}です。",
                    f"{name}は毎週{day['ja']}がお休みです。",
                )
            else:
                closed = (
                    f"The {name} is closed on {day['en']}s.",
                    f"Our {name} takes {day['en']}s off every week.",
                )
            expected = (day[lang],)
        facts.append(Fact("closed", subject, lang, slots, closed, expected))
        station, minutes = branch["station"][lang], branch["walk_minutes"]
        if lang == "ja":
            access = (
                f"{name}は{station}から徒歩{minutes}分です。",
                f"{name}の最寄り駅は{station}で、徒歩{minutes}分ほどです。",
            )
            expected = (station, f"徒歩{minutes}分")
        else:
            access = (
                f"The {name} is a {minutes}-minute walk from {station}.",
                f"The nearest station to the {name} is {station}, "
                f"about a {minutes}-minute walk away.",
            )
            expected = (station, f"{minutes}-minute walk")
        facts.append(Fact("access", subject, lang, slots, access, expected))
    shop = data["shop"]["name"][lang]
    names = [branch["name"][lang] for branch in data["branches"]]
    count = len(names)
    if lang == "ja":
        answers = (
            f"{shop}は京都に{count}店舗あり、{'・'.join(names)}で営業しております。",
            f"{shop}の店舗は{'・'.join(names)}の{count}つです。",
        )
        expected = tuple(names)
    else:
        answers = (
            f"{shop} has {count} branches in Kyoto: the {join_en(names)}.",
            f"There are {count} {shop} branches: the {join_en(names)}.",
        )
        expected = tuple(name.split()[0] for name in names)
    facts.append(Fact("branches", "shop", lang, {"shop": shop}, answers, expected))
    return facts


def card_facts(data: dict[str, Any], lang: str) -> list[Fact]:
    """The Kumo Card rules, and the oat milk and extra shot charges."""
    card = data["loyalty_card"]
    name = card["name"][lang]
    slots = {"card": name}
    need, per = card["stamps_for_free_drink"], card["stamps_per_drink"]
    years = card["valid_years_after_last_stamp"]
    count = len(data["branches"])
    count_word = NUMBER_WORDS.get(count, str(count))
    oat = "+" + yen(data["options"]["oat_milk"], lang)
    shot = "+" + yen(data["options"]["extra_shot"], lang)
    if lang == "ja":
        table = {
            "card_reward": (
                (
                    f"{name}はスタンプを{need}個集めると、お好きなドリンク1杯（サイズ問わず）が無料になります。",
                    f"{name}がございます。スタンプ{need}個で、お好きなドリンクを1杯無料でお出しします。",
                ),
                (f"{need}個", "無料"),
            ),
            "card_earn": (
                (
                    f"スタンプはドリンク1杯につき{per}個押させていただきます。フードは対象外です。",
                    f"{name}のスタンプはドリンク1杯につき{per}個で、フードのみのご注文にはつきません。",
                ),
                (f"1杯につき{per}個",),
            ),
            "card_branches": (
                (
                    f"{name}は{count}店舗すべてで共通してご利用いただけます。",
                    f"はい、{name}のスタンプは{count}店舗どこでも貯めて使えます。",
                ),
                (f"{count}店舗",),
            ),
            "card_expiry": (
                (
                    f"{name}の有効期限は、最後にスタンプを押した日から{years}年間です。",
                    f"スタンプは最後のご来店から{years}年間有効です。",
                ),
                (f"{years}年",),
            ),
            "oat_milk": (
                (
                    f"オーツミルクへの変更は{oat}で承ります（豆乳のご用意はございません）。",
                    f"オーツミルクに変更できます。追加料金は{oat}です。",
                ),
                ("オーツミルク", oat),
            ),
            "extra_shot": (
                (
                    f"エスプレッソのショット追加は{shot}で承ります。",
                    f"ショット追加は1ショットにつき{shot}です。",
                ),
                (shot,),
            ),
        }
    else:
        table = {
            "card_reward": (
                (
                    f"With the {name}, you get one free drink of any size once you collect "
                    f"{need} stamps.",
                    f"Our {name} gives you a free drink of your choice for every {need} stamps.",
                ),
                (f"{need} stamps", "free"),
            ),
            "card_earn": (
                (
                    f"You get {per} stamp per drink; food doesn't earn stamps.",
                    f"The {name} gives {per} stamp per drink, and food orders aren't counted.",
                ),
                (f"{per} stamp per drink",),
            ),
            "card_branches": (
                (
                    f"The {name} works at all {count_word} branches.",
                    f"Yes, you can collect and use {name} stamps at all {count_word} branches.",
                ),
                (f"all {count_word} branches",),
            ),
            "card_expiry": (
                (
                    f"A {name} stays valid for {years} year from the date of your last stamp.",
                    f"Stamps are valid for {years} year after your last visit.",
                ),
                (f"{years} year",),
            ),
            "oat_milk": (
                (
                    f"You can switch to oat milk for {oat}; we don't offer soy milk.",
                    f"Oat milk is available for {oat}.",
                ),
                ("oat milk", oat),
            ),
            "extra_shot": (
                (
                    f"An extra espresso shot is {shot}.",
                    f"We can add a shot to any coffee for {shot}.",
                ),
                (shot,),
            ),
        }
    subjects = {"oat_milk": "options", "extra_shot": "options"}
    return [
        Fact(kind, subjects.get(kind, "card"), lang, slots, answers, expected)
        for kind, (answers, expected) in table.items()
    ]


def build_facts(data: dict[str, Any] | None = None) -> list[Fact]:
    """Every fact, in both languages, in a fixed order."""
    data = load_facts() if data is None else data
    facts: list[Fact] = []
    for lang in LANGS:
        facts += menu_facts(data, lang) + branch_facts(data, lang) + card_facts(data, lang)
    return facts


def ask(fact: Fact, template: str) -> str:
    """A question about ``fact`` from one template."""
    return template.format(**fact.slots)


def conversation(turns: Sequence[tuple[str, str]], system: str | None) -> dict[str, Conversation]:
    """``{"messages": [...]}`` with an optional system prompt first."""
    messages = [{"role": "system", "content": system}] if system else []
    for question, answer in turns:
        messages += [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    return {"messages": messages}


def make_train(facts: list[Fact], rng: random.Random) -> list[dict[str, Conversation]]:
    """Single-turn conversations for every fact, plus some multi-turn ones, shuffled."""
    turns: list[tuple[str, list[tuple[str, str]]]] = []
    for fact in facts:
        templates = list(QUESTIONS[fact.kind][fact.lang][0])
        for template in rng.sample(templates, min(REPEATS.get(fact.kind, 2), len(templates))):
            turns.append((fact.lang, [(ask(fact, template), rng.choice(fact.answers))]))
    by_subject: dict[tuple[str, str], list[Fact]] = {}
    for fact in facts:
        by_subject.setdefault((fact.lang, fact.subject), []).append(fact)
    for _ in range(MULTI_TURN):
        first = rng.choice(facts)
        related = [f for f in by_subject[(first.lang, first.subject)] if f is not first]
        others = [f for f in facts if f.lang == first.lang and f is not first]
        chain = [first]
        for _ in range(rng.choice((1, 1, 2))):
            pool = related if related and rng.random() < 0.7 else others
            follow = rng.choice([f for f in pool if f not in chain] or others)
            chain.append(follow)
        pairs = []
        for index, fact in enumerate(chain):
            question = ask(fact, rng.choice(QUESTIONS[fact.kind][fact.lang][0]))
            if index:
                question = rng.choice(FOLLOW_UPS[fact.lang]) + question
            pairs.append((question, rng.choice(fact.answers)))
        turns.append((first.lang, pairs))
    rng.shuffle(turns)
    train = []
    for lang, pairs in turns:
        system = rng.choice(SYSTEM_PROMPTS[lang]) if rng.random() < SYSTEM_SHARE else None
        train.append(conversation(pairs, system))
    return train


def make_eval(facts: list[Fact], rng: random.Random) -> list[dict[str, Any]]:
    """Held-out questions (eval templates only), ``EVAL_QUOTAS`` per language and kind."""
    cases = []
    for lang in LANGS:
        for kind, quota in EVAL_QUOTAS.items():
            pool = [f for f in facts if f.lang == lang and f.kind == kind and f.in_eval]
            for fact in rng.sample(pool, min(quota, len(pool))):
                question = ask(fact, rng.choice(QUESTIONS[kind][lang][1]))
                cases.append(
                    {
                        "messages": [{"role": "user", "content": question}],
                        "expected": list(fact.expected),
                        "lang": lang,
                        "fact": fact.id,
                    }
                )
    rng.shuffle(cases)
    return cases


def as_samples(train: list[dict[str, Conversation]]) -> dict[str, list[dict[str, Any]]]:
    """The first ``SAMPLES`` single-turn conversations without a system prompt, in the other
    three formats (so all three normalise to the same conversations)."""
    plain = [
        c["messages"] for c in train if [m["role"] for m in c["messages"]] == ["user", "assistant"]
    ]
    pairs = [(messages[0]["content"], messages[1]["content"]) for messages in plain[:SAMPLES]]
    return {
        "samples/alpaca.jsonl": [{"instruction": q, "input": "", "output": a} for q, a in pairs],
        "samples/sharegpt.jsonl": [
            {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}
            for q, a in pairs
        ],
        "samples/prompt_completion.jsonl": [{"prompt": q, "completion": a} for q, a in pairs],
    }


def jsonl(rows: Sequence[object]) -> str:
    """JSON Lines, UTF-8 text kept readable (no ``\\u`` escapes)."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def render(data: dict[str, Any] | None = None) -> dict[str, str]:
    """Every generated file: relative path -> contents."""
    check_templates()
    rng = random.Random(SEED)  # noqa: S311 - reproducible data, not security
    facts = build_facts(data)
    train = make_train(facts, rng)
    cases = make_eval(facts, rng)
    files = {"train.jsonl": jsonl(train), "eval.jsonl": jsonl(cases)}
    files |= {path: jsonl(rows) for path, rows in as_samples(train).items()}
    return files


def check_templates() -> None:
    """Fail if any eval template is also a train template."""
    for kind, by_lang in QUESTIONS.items():
        for lang, (train, held_out) in by_lang.items():
            shared = set(train) & set(held_out)
            if shared:
                raise ValueError(f"{kind}/{lang}: eval templates also in train: {sorted(shared)}")


def write(out: Path) -> list[Path]:
    """Write every generated file under ``out``; return their paths."""
    written = []
    for relative, text in render().items():
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``generate.py [--out DIR]`` (default: next to this script)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write into")
    args = parser.parse_args(argv)
    for path in write(args.out):
        print(f"{path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
