"""Japanese text hygiene for OCR output: pure functions on strings.

OCR engines were built for space-separated scripts. Tesseract reports Japanese as
one "word" per character or per few characters and puts a space between them, it
reads table rules as ``|`` and underlines as ``_``, and it confuses look-alike
characters across scripts (katakana ロ and kanji 口). Everything here undoes those
habits without touching what was really printed: a space between two Latin or digit
words stays (``TEL 089-361-9361``), a full-width space is kept, and look-alikes are
only changed where the neighbours leave no doubt.

The PDF writer and metadata extraction use the same functions, so "is this Japanese"
has one answer across kiroku.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "FULLWIDTH_SPACE",
    "is_kanji",
    "is_hiragana",
    "is_katakana",
    "is_kana",
    "is_cjk",
    "is_latin_or_digit",
    "needs_space_between",
    "join_japanese_words",
    "remove_spurious_spaces",
    "printed_spaces",
    "strip_rule_chars",
    "has_letters",
    "drop_rule_artifacts",
    "fix_confusions",
    "clean_line",
    "normalize_for_compare",
    "new_forms",
    "OLD_TO_NEW",
]

FULLWIDTH_SPACE = "\u3000"

# Characters that look like table rules, box edges or underlines when an engine reads
# a ruled form. They are never part of the text on the scans we archive (a real
# vertical bar is as good as absent in Japanese administrative documents).
_RULE_CHARS = "|｜¦│┃丨_＿‖"


def is_kanji(ch: str) -> bool:
    """CJK unified ideographs (incl. extension A and compatibility) and 々〆〇ヶ."""
    o = ord(ch)
    return (
        0x4E00 <= o <= 0x9FFF
        or 0x3400 <= o <= 0x4DBF
        or 0xF900 <= o <= 0xFAFF
        or 0x20000 <= o <= 0x2FA1F
        or ch in "々〆〇ヶ"
    )


def is_hiragana(ch: str) -> bool:
    return 0x3041 <= ord(ch) <= 0x309F


def is_katakana(ch: str) -> bool:
    """Full-width and half-width katakana, including the prolonged sound mark ー."""
    o = ord(ch)
    return 0x30A0 <= o <= 0x30FF or 0x31F0 <= o <= 0x31FF or 0xFF66 <= o <= 0xFF9F


def is_kana(ch: str) -> bool:
    return is_hiragana(ch) or is_katakana(ch)


def is_cjk(ch: str) -> bool:
    """True for characters that are set without spaces in Japanese text.

    Kanji, kana, Japanese punctuation and brackets (U+3000 block), and the full-width
    forms block (full-width digits and letters included: 「１２月」 is set solid).
    The full-width space itself is not counted: it is a space, not a character.
    """
    if not ch or ch == FULLWIDTH_SPACE:
        return False
    o = ord(ch)
    return (
        is_kanji(ch)
        or is_kana(ch)
        or 0x3001 <= o <= 0x303F  # 、。「」〒〜 ...
        or 0xFF01 <= o <= 0xFF60  # full-width ASCII variants
        or 0xFFE0 <= o <= 0xFFEF  # ￥ ￡ ...
        or 0x3200 <= o <= 0x33FF  # enclosed CJK, ㈱, squared units
        or o in (0x203B, 0x25CB, 0x25CF, 0x25A1, 0x25A0, 0x2192)  # ※ ○ ● □ ■ →
    )


def is_latin_or_digit(ch: str) -> bool:
    """ASCII letters and digits (what NFKC makes of full-width ones is a separate question)."""
    return ch.isascii() and ch.isalnum()


def needs_space_between(left: str, right: str) -> bool:
    """Whether two adjacent words need a space when they are put back together.

    Only a Latin/digit word followed by another Latin/digit word does (``TEL`` ``089``,
    ``E-mail`` ``kikaku@...``). Anything touching Japanese is set solid, which is how
    the page printed it: ``令和`` ``7`` ``年`` is 令和7年.
    """
    if not left or not right:
        return False
    a, b = left[-1], right[0]
    if is_cjk(a) or is_cjk(b):
        return False
    return not (a.isspace() or b.isspace())


def join_japanese_words(words: list[str]) -> str:
    """Join OCR words into one line of text the way Japanese is written.

    Spaces go only between two Latin/digit words; empty words are skipped. A word
    that is a lone full-width space (an engine that reports printed gaps) is kept.
    """
    out = ""
    for w in words:
        if not w:
            continue
        if out and needs_space_between(out, w):
            out += " "
        out += w
    return out


_SPACE_RUN = re.compile(r"[ \t\u00a0]+")


def remove_spurious_spaces(text: str) -> str:
    """Drop ASCII spaces that have a Japanese character on either side.

    Tesseract puts them between Japanese characters (``令 和 7 年``); the page has none
    there. A space between two Latin/digit runs is kept (single); full-width spaces are
    kept as printed.
    """
    lines = []
    for line in text.split("\n"):
        parts = _SPACE_RUN.split(line.strip(" \t\u00a0"))
        lines.append(join_japanese_words(parts))
    return "\n".join(lines)


def strip_rule_chars(text: str) -> str:
    """Remove the characters an engine makes of rules and underlines from one word.

    Bars (``|``, ``｜``, box-drawing lines) and underscores go wherever they stand, and
    so do runs of three or more dashes or long marks (a rule read as text). Single
    dashes and punctuation stay: ``－1－``, ``2202-076`` and ``、`` are text.
    """
    text = text.translate({ord(c): " " for c in _RULE_CHARS})
    text = re.sub(r"[-－—―─━ー=＝]{3,}", " ", text)
    return text


def has_letters(text: str) -> bool:
    """Whether there is anything to read: a letter, digit, kana or kanji."""
    return any(ch.isalnum() or is_kana(ch) or is_kanji(ch) for ch in text)


def printed_spaces(text: str) -> str:
    """Spaces an engine reports inside a line it read as a whole (a visible gap on paper).

    Unlike tesseract's word breaks these stand for real gaps, so they are kept, in the
    form Japanese typesetting uses: a run of whitespace becomes a full-width space 　 next
    to a Japanese character (``石川県知事　殿``, ``電話　019``) and one ASCII space
    between anything else (``TEL 089``); at either end of the text it goes.
    """
    def repl(m: re.Match) -> str:
        a = text[m.start() - 1] if m.start() > 0 else ""
        b = text[m.end()] if m.end() < len(text) else ""
        if not a or not b:
            return ""
        return FULLWIDTH_SPACE if is_cjk(a) or is_cjk(b) else " "

    return re.sub(r"[ \t\u00a0\u3000]+", repl, text)


def drop_rule_artifacts(text: str) -> str:
    """Remove what an engine read from table rules and underlines, line by line.

    strip_rule_chars on every line, and a line left with no letter, digit, kana or
    kanji at all (``| — |``, ``. 。 ,``) is removed.
    """
    out = []
    for line in text.split("\n"):
        line = _SPACE_RUN.sub(" ", strip_rule_chars(line)).strip()
        if has_letters(line):
            out.append(line)
    return "\n".join(out)


# Look-alikes: (kanji or other script, katakana) pairs. Replaced only between two
# katakana (or a katakana and the end of a run), where the kanji reading is not Japanese.
_KATAKANA_LOOKALIKES = {
    "口": "ロ",
    "工": "エ",
    "力": "カ",
    "夕": "タ",
    "卜": "ト",
    "二": "ニ",
    "八": "ハ",
    "一": "ー",
    "へ": "ヘ",
    "べ": "ベ",
    "ぺ": "ペ",
    "-": "ー",
    "−": "ー",
    "－": "ー",
    "—": "ー",
    "―": "ー",
}


# Simplified Chinese forms a multilingual (Chinese-trained) recogniser sometimes gives
# for a Japanese kanji (单価 for 単価). Only characters outside JIS X 0208 (cp932)
# are listed, so no character a Japanese document can contain is ever changed.
_SIMPLIFIED = (
    "单发书说关门问间东车长马鱼见贝页读语调请议记设认计论证该详课谢话诉访购费资贷质货转输务动劳县业专两严为乡买卖亚产亲仓众优"
    "传伤侧债兴养军农击则刚创别剂劝压厅历员响团园围图圆场块报执层岁币师带帐庆库应开异张弹归录彻总恶惯战户扩择换损时显术杂权极"
    "构标样桥检欢步济测满热爱环现电疗监确离种积稳竞笔简类纪约级纳纸线练组细终经结绍给统继续维综绿编缩罚职联胜脑节药获营补观规"
    "视览觉订讨让训讲许诊试误谈负财责败贯贴贸贺赏跃轮软较边达过运还进远连选遗邮邻释钱铁银错闭闻阅队阶际陆险隐难预领题额风飞馆"
    "验鸟龄织汉纵扰项顺须顾频颁俭剑圣坛处备复夺奋妇孙宁实宪宫审宽对寻导尔尝岛废忆怀态恳惊戏扫护拟拥挥摄摇敌晓暂杀栈栋树毕汤沟"
    "泽洁浊润渐渔滤滥滨灭灵炼烦烧猎盐盘矫础祸穷竖紧纠红纤纯纲纷纺绅绘络绝绩绪绵缓缘罗聪肃肠肾脏腾舰艺苏荣蓝虏虑讼评识诈词译诗"
    "诚诞诸诺谊谋谨谱贞贡贤贩贫贵贼赋赖赞赠轨轴轻载辈辉迁违迟酿钟钢铃铜铭锐锦锻镇镜阀阳阴阵陈雾韩顶顽颜饥饭饮饰饱饲骑鲜鸡鸣鹤"
    "齐齿龙龟值查"
)
_JAPANESE = (
    "単発書説関門問間東車長馬魚見貝頁読語調請議記設認計論証該詳課謝話訴訪購費資貸質貨転輸務動労県業専両厳為郷買売亜産親倉衆優"
    "伝傷側債興養軍農撃則剛創別剤勧圧庁歴員響団園囲図円場塊報執層歳幣師帯帳慶庫応開異張弾帰録徹総悪慣戦戸拡択換損時顕術雑権極"
    "構標様橋検歓歩済測満熱愛環現電療監確離種積穏競筆簡類紀約級納紙線練組細終経結紹給統継続維総緑編縮罰職連勝脳節薬獲営補観規"
    "視覧覚訂討譲訓講許診試誤談負財責敗貫貼貿賀賞躍輪軟較辺達過運還進遠連選遺郵隣釈銭鉄銀錯閉聞閲隊階際陸険隠難預領題額風飛館"
    "験鳥齢織漢縦擾項順須顧頻頒倹剣聖壇処備復奪奮婦孫寧実憲宮審寛対尋導爾嘗島廃憶懐態懇驚戯掃護擬擁揮摂揺敵暁暫殺桟棟樹畢湯溝"
    "沢潔濁潤漸漁濾濫浜滅霊錬煩焼猟塩盤矯礎禍窮竪緊糾紅繊純綱紛紡紳絵絡絶績緒綿緩縁羅聡粛腸腎臓騰艦芸蘇栄藍虜慮訟評識詐詞訳詩"
    "誠誕諸諾誼謀謹譜貞貢賢販貧貴賊賦頼賛贈軌軸軽載輩輝遷違遅醸鐘鋼鈴銅銘鋭錦鍛鎮鏡閥陽陰陣陳霧韓頂頑顔飢飯飲飾飽飼騎鮮鶏鳴鶴"
    "斉歯竜亀値査"
)
_TO_JAPANESE_FORM = str.maketrans(_SIMPLIFIED, _JAPANESE)


def japanese_forms(text: str) -> str:
    """Replace simplified Chinese forms by the Japanese kanji they stand for (单価 -> 単価)."""
    return text.translate(_TO_JAPANESE_FORM)


_JP_BRACKETS = re.compile(r"[(（]([^()（）]*)[)）]")


def fix_confusions(text: str) -> str:
    """Repair look-alike confusions where the context makes the answer certain.

    * A kanji (or hiragana, or dash) look-alike of a katakana between two katakana
      becomes the katakana (``フラット一ファイル`` is not Japanese, ``フラットーファイル``
      is not either, but ``コンピュ一タ`` -> ``コンピュータ``, ``ボ一ル`` -> ``ボール``,
      ``ク口ス`` -> ``クロス``). After a katakana at the end of a katakana word only the
      long-vowel mark is restored (``センタ一`` -> ``センター``).
    * ASCII digits confused with letters inside a run of digits: ``O``/``o`` -> ``0``,
      ``l``/``I`` -> ``1`` when both neighbours are digits (``2O24`` -> ``2024``).
    * ASCII parentheses around Japanese become the full-width ones Japanese documents
      print (``(通知)`` -> ``（通知）``); NFKC maps them back, so nothing is lost.
    * simplified Chinese forms become Japanese ones (japanese_forms), and a Latin
      middle dot ``·`` the Japanese ``・``.
    """
    chars = list(japanese_forms(text))
    n = len(chars)
    for i, ch in enumerate(chars):
        prev = chars[i - 1] if i > 0 else ""
        nxt = chars[i + 1] if i + 1 < n else ""
        if ch in _KATAKANA_LOOKALIKES and prev and is_katakana(prev) and prev != "ー":
            target = _KATAKANA_LOOKALIKES[ch]
            if nxt and is_katakana(nxt) and nxt != "ー":
                chars[i] = target
            elif target == "ー" and ch in "一" and (not nxt or not (is_kanji(nxt) or is_hiragana(nxt))):
                # センタ一 at the end of a word: 一 after katakana is always the long mark
                chars[i] = target
        elif ch in "OolI" and prev.isdigit() and prev.isascii() and nxt.isdigit() and nxt.isascii():
            chars[i] = "0" if ch in "Oo" else "1"
    text = "".join(chars)
    # the recogniser's Latin middle dot is the Japanese one in a Japanese archive (男・女, Ｔ・Ｓ)
    text = text.replace("\u00b7", "・")
    # a bracket pair around Japanese (either bracket may already be full-width)
    return _JP_BRACKETS.sub(lambda m: f"（{m.group(1)}）" if any(is_kanji(c) or is_kana(c) for c in m.group(1)) else m.group(0), text)


def clean_line(text: str) -> str:
    """All of the above for one line of OCR output, in the order that is safe.

    Rule artefacts first (they are separated by spaces), then spaces, then look-alikes
    (which need the characters to be adjacent).
    """
    text = drop_rule_artifacts(text)
    text = remove_spurious_spaces(text)
    return fix_confusions(text).strip()


_WS = re.compile(r"\s+")


def normalize_for_compare(text: str) -> str:
    """NFKC with all whitespace removed: how kiroku's evaluator compares texts."""
    return _WS.sub("", unicodedata.normalize("NFKC", text))


# Old (旧字体) -> new (新字体) kanji, from the 常用漢字表's bracketed old forms and the
# 人名用漢字 pairs. An archive keeps old forms as printed (a 1950s page says 單位 and
# 縣); search must still find them under the forms people type today. Only
# one-to-one replacements of shape are listed: no 同音の書きかえ (游泳 stays 游泳).
_OLD_NEW_PAIRS = (
    "亞亜惡悪壓圧圍囲爲為醫医壹壱逸逸隱隠營営榮栄衞衛驛駅圓円鹽塩緣縁艷艶奧奥應応橫横歐欧毆殴黃黄溫温"
    "穩穏假仮價価畫画會会囘回壞壊懷懐繪絵槪概擴拡殼殻覺覚學学嶽岳樂楽勸勧卷巻寬寛歡歓觀観關関陷陥巖巌"
    "顏顔歸帰氣気龜亀僞偽戲戯犧犠舊旧據拠擧挙峽峡挾挟敎教狹狭鄕郷曉暁勳勲薰薫徑径莖茎惠恵揭掲溪渓經経"
    "繼継螢蛍輕軽鷄鶏藝芸擊撃缺欠儉倹劍剣圈圏檢検權権獻献縣県險険顯顕驗験嚴厳廣広效効恆恒黃黄鑛鉱號号"
    "國国濟済碎砕齋斎劑剤櫻桜雜雑參参慘惨棧桟蠶蚕贊賛殘残絲糸齒歯兒児辭辞濕湿實実舍舎寫写釋釈壽寿收収"
    "從従澁渋獸獣縱縦肅粛處処敍叙將将燒焼稱称證証奬奨條条狀状乘乗淨浄剩剰疊畳孃嬢讓譲釀醸觸触囑嘱寢寝"
    "愼慎眞真神神盡尽圖図粹粋醉酔穗穂隨随髓髄樞枢數数瀨瀬聲声靜静齊斉攝摂竊窃專専戰戦淺浅潛潜纖繊踐践"
    "錢銭禪禅雙双壯壮搜捜插挿巢巣爭争總総莊荘裝装騷騒增増藏蔵臟臓卽即屬属續続墮堕體体對対帶帯滯滞臺台"
    "瀧滝擇択澤沢單単嘆嘆擔担膽胆團団彈弾斷断癡痴遲遅晝昼蟲虫鑄鋳廳庁聽聴敕勅鎭鎮遞逓鐵鉄轉転點点傳伝"
    "黨党盜盗燈灯當当鬭闘德徳獨独讀読屆届貳弐惱悩腦脳霸覇廢廃拜拝賣売麥麦發発髮髪拔抜蠻蛮祕秘濱浜甁瓶"
    "拂払佛仏竝並變変邊辺辨弁瓣弁辯弁舖舗步歩寶宝豐豊襃褒沒没飜翻萬万滿満默黙譯訳藥薬豫予餘余與与譽誉"
    "搖揺樣様謠謡來来賴頼亂乱覽覧龍竜兩両獵猟綠緑壘塁淚涙勵励禮礼隸隷靈霊齡齢戀恋爐炉勞労樓楼錄録灣湾"
    "晉晋姊姉曾曽郞郎虛虚焰炎"
)
OLD_TO_NEW: dict[str, str] = {
    _OLD_NEW_PAIRS[i]: _OLD_NEW_PAIRS[i + 1]
    for i in range(0, len(_OLD_NEW_PAIRS) - 1, 2)
    if _OLD_NEW_PAIRS[i] != _OLD_NEW_PAIRS[i + 1]
}
_TO_NEW_FORM = str.maketrans(OLD_TO_NEW)


def new_forms(text: str) -> str:
    """The text with old kanji forms replaced by today's (單位 -> 単位, 縣 -> 県, 庁舍 -> 庁舎).

    For search only: the record keeps what was printed. The catalog's search
    normalisation folds both the indexed text and the query with it, so 單 finds 単
    and 単 finds 單. Characters that only look alike through a CJK compatibility
    code point (逸 U+FA67 and U+9038) are left to NFKC.
    """
    return text.translate(_TO_NEW_FORM)
