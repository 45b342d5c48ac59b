"""Dockyard's own seeded generator of realistic orders for the benchmark and the tests.

    python -m dockyard.sample_orders -n 20000 --seed 42 -o /tmp/orders.jsonl

Every order validates against `dsl/schemas/order.schema.json` (v1). The output is fully
determined by `n` and `seed`. The orders exercise the quirks of real feeds that the reference
mapping (order → warehouse `deliveryOrder`) has to handle:

* five channels (Tmall, JD, Douyin, WeChat mini-app, official web shop), with shops both in and
  outside the warehouse table;
* money as decimal strings: Douyin drops trailing zeros (``"59.9"``, ``"100"``, ``"0"``); about 3%
  of lines carry an apportioned coupon discount with three decimals, half of them ending in 5 so
  that the line price lands exactly on a half cent (ROUND_HALF_UP, 四舍五入), and the paid total
  then keeps three decimals too;
* about 3% of lines have qty 0 (refunded before shipping) and about 1% of orders have only qty-0
  lines; about 10% of orders carry a gift line (price 0);
* ``created_at`` in ISO-8601: ``+08:00`` with whole seconds, Douyin with milliseconds, the official
  shop in UTC (``...Z``, sometimes with milliseconds) so the Shanghai date can differ;
  a Double-11 spike right after midnight makes that frequent;
* remark missing, null, ``""`` or text (some with markup characters, emoji, trailing spaces);
  invoice missing, null or an object; carrier preference missing, null, SF / JD / ZTO / YTO or
  (rarely) a code outside the carrier table;
* addresses with stray leading/trailing spaces, tabs, CR/LF, or an inner double space;
  platform-masked mobile numbers (``139****0366``) on Tmall and Douyin.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

__all__ = ["generate", "main"]

Order = dict[str, Any]

CHINA = timezone(timedelta(hours=8))
CENT = Decimal("0.01")
ZERO = Decimal(0)


# --- catalogue and address book -----------------------------------------------------------------


@dataclass(frozen=True)
class Product:
    code: str
    name: str
    price: str
    unit: str
    weight_kg: str


CATALOGUE: tuple[Product, ...] = (
    Product("HM-1001", "北欧风陶瓷马克杯 350ml", "39.90", "个", "0.42"),
    Product("HM-1002", "全棉四件套 1.8m床 灰色", "329.00", "套", "2.6"),
    Product("HM-1003", "记忆棉护颈枕", "149.00", "个", "1.1"),
    Product("HM-1004", "竹纤维抽纸 24包整箱", "52.80", "箱", "4.8"),
    Product("EL-2001", "65W氮化镓快充充电器", "129.00", "个", "0.12"),
    Product("EL-2002", "机械键盘 青轴 104键", "379.00", "把", "1.05"),
    Product("EL-2003", "智能手环 血氧心率监测", "249.00", "个", "0.08"),
    Product("EL-2004", "便携投影仪 1080P", "1899.00", "台", "1.9"),
    Product("BT-3001", "烟酰胺精华液 30ml", "189.00", "瓶", "0.15"),
    Product("BT-3002", "防晒喷雾 SPF50+ 150ml", "98.00", "瓶", "0.2"),
    Product("BT-3003", "控油洗发水 500ml", "59.90", "瓶", "0.56"),
    Product("FD-4001", "云南小粒咖啡豆 454g", "88.00", "袋", "0.5"),
    Product("FD-4002", "五常大米 5kg 真空装", "79.90", "袋", "5.1"),
    Product("FD-4003", "低温烘焙混合坚果 30袋", "139.00", "箱", "0.9"),
    Product("SP-5001", "瑜伽垫 加厚10mm 紫色", "69.00", "张", "1.2"),
    Product("SP-5002", "速干运动T恤 男 XL", "89.00", "件", "0.18"),
    Product("KD-6001", "儿童绘本 套装 10册", "168.00", "套", "2.2"),
    Product("KD-6002", "遥控越野车 1:16", "259.00", "辆", "1.6"),
)
VARIANTS = ("STD", "RED", "GRY", "BLU")
GIFT_LINES: tuple[tuple[str, str], ...] = (
    ("GF-01", "店铺定制环保袋"),
    ("GF-02", "旅行装小样 10ml"),
    ("GF-03", "品牌冰箱贴"),
    ("GF-04", "手写感谢卡"),
)

# province, city, districts, postcode, streets
REGIONS: tuple[tuple[str, str, tuple[str, ...], str, tuple[str, ...]], ...] = (
    ("福建省", "厦门市", ("思明区", "湖里区"), "361000", ("厦禾路", "湖滨南路", "嘉禾路")),
    ("山东省", "青岛市", ("市南区", "崂山区"), "266000", ("香港中路", "海尔路", "燕儿岛路")),
    ("重庆市", "重庆市", ("渝中区", "江北区"), "400010", ("解放碑民族路", "观音桥步行街", "北城天街")),
    ("天津市", "天津市", ("和平区", "南开区"), "300041", ("南京路", "鞍山道", "卫津路")),
    ("湖南省", "长沙市", ("岳麓区", "芙蓉区"), "410006", ("麓山南路", "五一大道", "韶山北路")),
    ("河南省", "郑州市", ("金水区", "二七区"), "450000", ("花园路", "大学路", "农业路")),
    ("辽宁省", "大连市", ("中山区", "甘井子区"), "116001", ("人民路", "五四路", "黄河路")),
    ("云南省", "昆明市", ("五华区", "盘龙区"), "650031", ("翠湖南路", "北京路", "青年路")),
    ("安徽省", "合肥市", ("蜀山区", "包河区"), "230031", ("长江西路", "徽州大道", "望江西路")),
    ("广东省", "东莞市", ("",), "523000", ("东城中路", "鸿福路", "莞太路")),
)
FAMILY = ("欧阳", "司马", "钱", "孔", "曹", "严", "华", "金", "魏", "陶", "姜", "戚", "谢", "邹", "喻", "柏")
GIVEN = ("一鸣", "雨桐", "思远", "可欣", "浩然", "梓涵", "俊杰", "佳怡", "宇航", "诗琪", "博文", "欣怡")
REMARKS = (
    "麻烦放快递柜，谢谢",
    "家里有老人，请电话联系",
    "送女朋友的，别放价格标签 ",
    "<b>急</b> & 尽快 \"今天\" 发 '谢谢'",
    "🎂生日礼物，请包装好🎁",
    "晚上八点后配送",
)
CARRIERS = ("SF", "JD", "ZTO", "YTO")
OFF_TABLE_CARRIERS = ("STO", "YUNDA", "EMS")
OUTER_WHITESPACE = (" ", "  ", "\t", "\r\n", " \n", "\t ")


# --- channels ------------------------------------------------------------------------------------


def _tmall_nick(rng: random.Random) -> str:
    return f"tb{rng.randrange(10**9):09d}"


def _jd_nick(rng: random.Random) -> str:
    return f"jd_{rng.getrandbits(28):07x}"


def _plain_nick(rng: random.Random) -> str:
    return f"{rng.choice(FAMILY)}{rng.choice(GIVEN)}{rng.choice(('', '_', '🌸', '88'))}"


@dataclass(frozen=True)
class Channel:
    name: str
    prefix: str
    platform: str
    weight: int
    shops: tuple[str, ...]
    trims_money: bool
    stamp: Callable[[datetime, random.Random], str]
    nick: Callable[[random.Random], str]
    masks_mobile: bool


def _stamp_china(t: datetime, rng: random.Random) -> str:
    return t.isoformat(timespec="seconds")


def _stamp_millis(t: datetime, rng: random.Random) -> str:
    return t.isoformat(timespec="milliseconds")


def _stamp_utc(t: datetime, rng: random.Random) -> str:
    u = t.astimezone(UTC)
    if rng.random() < 0.2:
        return u.strftime("%Y-%m-%dT%H:%M:%S.") + f"{u.microsecond // 1000:03d}Z"
    return u.strftime("%Y-%m-%dT%H:%M:%SZ")


# name, order-number prefix, source platform, weight, shops, trims money, stamp, nick, masks mobiles
CHANNELS: tuple[Channel, ...] = (
    Channel(
        "tmall", "TM", "TM", 34, ("TM-FLAG-001", "TM-OUTLET-002"), False, _stamp_china, _tmall_nick, True
    ),
    Channel("jd", "JD", "JD", 24, ("JD-SELF-001", "JD-POP-003"), False, _stamp_china, _jd_nick, False),
    Channel("douyin", "DY", "DY", 24, ("DY-LIVE-001", "DY-LIVE-002"), True, _stamp_millis, _plain_nick, True),
    Channel("miniapp", "MP", "WX", 11, ("MP-WX-001",), False, _stamp_china, _plain_nick, False),
    Channel("official", "OF", "OTHER", 7, ("OF-WEB-001",), False, _stamp_utc, _plain_nick, False),
)
CHANNEL_WEIGHTS = tuple(c.weight for c in CHANNELS)


def _money(value: Decimal, trimmed: bool) -> str:
    """A money string: at least two decimals, or Douyin-style with trailing zeros dropped."""
    if value.quantize(CENT) == value:  # whole cents: written with exactly two places
        value = value.quantize(CENT)
    text = f"{value:f}"
    if trimmed and "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


# --- the order factory ---------------------------------------------------------------------------


class OrderFactory:
    """Builds orders one at a time from a single seeded random stream."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def pick(self, options: Sequence[Any]) -> Any:
        return options[self.rng.randrange(len(options))]

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def order(self, seq: int) -> Order:
        rng = self.rng
        channel: Channel = rng.choices(CHANNELS, weights=CHANNEL_WEIGHTS)[0]
        created = self.created_time(channel)
        paid = created + timedelta(seconds=rng.randrange(3, 1200), milliseconds=rng.randrange(1000))
        if channel.stamp is _stamp_china:
            paid = paid.replace(microsecond=0)

        items, goods, line_discount = self.lines(channel)
        freight = Decimal(self.pick(("0.00", "0.00", "0.00", "6.00", "10.00", "15.00")))
        coupon = Decimal(self.pick((0, 0, 0, 0, 3, 10, 30)))
        discount_total = line_discount + coupon
        paid_total = max(goods + freight - discount_total, ZERO)

        order: Order = {
            "order_no": f"{channel.prefix}{created:%Y%m%d}{seq:06d}",
            "channel": channel.name,
            "source_platform": channel.platform,
            "shop_code": self.pick(channel.shops),
            "created_at": channel.stamp(created, rng),
            "paid_at": channel.stamp(paid, rng),
            "buyer": {"nick": channel.nick(rng), "id": f"{channel.prefix}B{rng.getrandbits(40):012x}"},
            "receiver": self.receiver(channel),
            "items": items,
            "amounts": {
                "goods_total": _money(goods, channel.trims_money),
                "freight": _money(freight, channel.trims_money),
                "discount_total": _money(discount_total, channel.trims_money),
                "paid_total": _money(paid_total, channel.trims_money),
            },
        }
        if self.chance(0.15):
            order["order_type"] = "sale"
        self.optional_texts(order, channel)
        return order

    def created_time(self, channel: Channel) -> datetime:
        rng = self.rng
        if self.chance(0.25):  # Double 11: the rush in the first hours after midnight
            start, span = datetime(2023, 11, 11, tzinfo=CHINA), 3 * 3600
        elif self.chance(0.1):  # the evening before, shortly before midnight
            start, span = datetime(2023, 11, 10, 22, tzinfo=CHINA), 2 * 3600
        else:
            start, span = datetime(2023, 10, 28, tzinfo=CHINA), 16 * 86400
        created = start + timedelta(seconds=rng.randrange(span))
        if channel.stamp is not _stamp_china:
            created += timedelta(microseconds=1000 * rng.randrange(1000))
        return created

    def lines(self, channel: Channel) -> tuple[list[dict[str, Any]], Decimal, Decimal]:
        rng = self.rng
        count = rng.choices((1, 2, 3, 4, 5, 6), weights=(45, 27, 13, 8, 4, 3))[0]
        refund_all = self.chance(0.002)  # a full refund: every line, gift too, qty 0
        items: list[dict[str, Any]] = []
        goods = line_discount = ZERO
        for _ in range(count):
            product: Product = self.pick(CATALOGUE)
            price = Decimal(product.price)
            if self.chance(0.3):  # a promotion price
                factor = Decimal(self.pick(("0.95", "0.88", "0.8", "0.75")))
                price = (price * factor).quantize(CENT, ROUND_HALF_UP)
            discount = self.line_discount(price)
            refunded = refund_all or self.chance(0.03)
            qty = 0 if refunded else rng.choices((1, 2, 3, 6), weights=(72, 18, 7, 3))[0]
            goods += price * qty
            line_discount += discount * qty
            item: dict[str, Any] = {
                "sku": f"{product.code}-{self.pick(VARIANTS)}",
                "name": product.name,
                "qty": qty,
                "unit_price": _money(price, channel.trims_money),
                "discount": _money(discount, channel.trims_money),
                "is_gift": False,
            }
            if channel.name in ("tmall", "jd"):
                item["item_id"] = str(rng.randrange(10**15, 10**16))
                item["unit"] = product.unit
            if self.chance(0.3):
                item["weight"] = product.weight_kg
            items.append(item)
        if self.chance(0.10):
            code, name = self.pick(GIFT_LINES)
            gift_qty = 0 if refund_all else 1
            items.insert(
                rng.randrange(len(items) + 1),
                {
                    "sku": code,
                    "name": name,
                    "qty": gift_qty,
                    "unit_price": _money(ZERO, channel.trims_money),
                    "discount": _money(ZERO, channel.trims_money),
                    "is_gift": True,
                },
            )
        if channel.name == "jd":
            for number, item in enumerate(items, 1):
                item["line_no"] = number
        return items, goods, line_discount

    def line_discount(self, price: Decimal) -> Decimal:
        roll = self.rng.random()
        if roll < 0.03:  # an order coupon apportioned to the line: three decimals
            thousandths = self.rng.randrange(1, int(price * 250) // 10 + 1) * 10
            thousandths += 5 if self.chance(0.5) else self.rng.randrange(1, 10)
            return Decimal(thousandths) / 1000
        if roll < 0.45:
            percent = Decimal(self.pick((5, 8, 10, 12, 15, 20, 25)))
            return (price * percent / 100).quantize(CENT, ROUND_HALF_UP)
        return ZERO.quantize(CENT)

    def receiver(self, channel: Channel) -> dict[str, Any]:
        rng = self.rng
        province, city, districts, postcode, streets = self.pick(REGIONS)
        estate = self.pick(("", "小区", "花园", "大厦"))
        address = (
            f"{self.pick(streets)}{rng.randrange(1, 600)}号{estate}"
            f"{rng.randrange(1, 40)}栋{rng.randrange(101, 2810)}室"
        )
        roll = rng.random()
        if roll < 0.05:
            address = self.pick(OUTER_WHITESPACE) + address
        elif roll < 0.09:
            address = address + self.pick(OUTER_WHITESPACE)
        elif roll < 0.11:
            address = self.pick(OUTER_WHITESPACE) + address + self.pick(OUTER_WHITESPACE)
        elif roll < 0.15:
            address = address.replace("栋", "栋  ", 1)  # inner double space: kept by the mapping
        mobile = f"1{self.pick('35789')}{rng.randrange(10**9):09d}"
        if channel.masks_mobile and self.chance(0.55):
            mobile = f"{mobile[:3]}****{mobile[7:]}"
        receiver: dict[str, Any] = {
            "name": self.pick(FAMILY) + self.pick(GIVEN),
            "mobile": mobile,
            "province": province,
            "city": city,
            "district": self.pick(districts),
            "address": address,
        }
        if self.chance(0.8):
            receiver["zip"] = postcode
        return receiver

    def optional_texts(self, order: Order, channel: Channel) -> None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.28:
            order["remark"] = self.pick(REMARKS)
        elif roll < 0.46:
            order["remark"] = ""
        elif roll < 0.50:
            order["remark"] = None
        roll = rng.random()
        if roll < 0.22:
            business = self.chance(0.35)
            order["invoice"] = {
                "type": self.pick(("electronic", "electronic", "paper")),
                "title": f"{self.pick(REGIONS)[1]}{self.pick(GIVEN)}贸易有限公司" if business else "个人",
                "tax_no": f"9135{rng.randrange(10**14):014d}" if business else "",
            }
        elif roll < 0.26:
            order["invoice"] = None
        roll = rng.random()
        if roll < 0.55:
            order["carrier_preference"] = "JD" if channel.name == "jd" else self.pick(CARRIERS)
        elif roll < 0.57:
            order["carrier_preference"] = self.pick(OFF_TABLE_CARRIERS)
        elif roll < 0.60:
            order["carrier_preference"] = None
        if self.chance(0.05):
            order["buyer_message"] = "尽快发货"


def generate(n: int, seed: int = 42) -> list[Order]:
    """`n` orders, the same ones for the same `seed`."""
    factory = OrderFactory(seed)
    return [factory.order(seq) for seq in range(1, n + 1)]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate Dockyard benchmark orders as JSON lines.")
    parser.add_argument("-n", type=int, default=20000, help="number of orders (default 20000)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    parser.add_argument("-o", "--out", default="-", help="output file, '-' for stdout (default)")
    args = parser.parse_args(argv)
    text = "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in generate(args.n, args.seed))
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
