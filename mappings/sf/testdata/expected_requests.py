"""Independent computation of the SF requests pinned in the *.test.yaml files of mappings/sf.

Nothing here imports Dockyard: the msgData texts are written out by hand (what SF must receive),
the digest follows SF's published rule

    msgDigest = Base64(raw MD5(UTF-8(URLENC(msgData + timestamp + checkWord))))

with URLENC = java.net.URLEncoder.encode(…, "UTF-8") (letters, digits and ".-*_" kept, space → "+",
every other byte → %XX upper case), and the body is the form as any HTTP client writes it.

Run:  python mappings/sf/testdata/expected_requests.py
and paste `body` / `signature` into the request expectations when a case changes on purpose.
"""

import base64
import hashlib
import json
import urllib.parse

CHECK_WORD = "TEST-ONLY-sf-check-word"  # the test secret SF_CHECK_WORD of the test files

SENDER_FULL = ('{"contactType":1,"company":"栖木家居有限公司","contact":"栖木仓配","tel":"0571-88886666",'
               '"mobile":"13912345678","country":"CN","province":"浙江省","city":"杭州市","county":"余杭区",'
               '"address":"仓前街道文一西路1500号 3号仓"}')
SENDER_BARE = ('{"contactType":1,"contact":"栖木仓配","mobile":"13912345678","country":"CN","province":"浙江省",'
               '"city":"杭州市","county":"余杭区","address":"仓前街道文一西路1500号 3号仓"}')

CASES = {
    # create-order.test.yaml
    "create: tmall-basic": dict(
        partnerID="DOCKYARD_TEST", requestID="req-create-1", serviceCode="EXP_RECE_CREATE_ORDER",
        timestamp="1699668000000",  # 2023-11-11T10:00:00+08:00
        msgData='{"orderId":"TM20231111000123","language":"zh-CN","monthlyCard":"7551234567","payMethod":1,'
                '"expressTypeId":1,"parcelQty":1,"contactInfoList":[' + SENDER_FULL + ','
                '{"contactType":2,"contact":"赵娟","mobile":"139****0366","country":"CN","province":"四川省",'
                '"city":"成都市","county":"武侯区","address":"中山北路739号26栋1038室","postCode":"610041"}],'
                '"cargoDetails":[{"name":"儿童益智积木 300粒","count":1,"unit":"盒","weight":1.250,"amount":143.10},'
                '{"name":"有机纯牛奶 250ml*12盒","count":2,"unit":"箱","weight":3.2,"amount":65.80},'
                '{"name":"轻薄羽绒服 黑色 M","count":1,"unit":"件","amount":458.23}],'
                '"remark":"不要放发票和价格单"}'),
    "create: url-hostile": dict(
        partnerID="DOCKYARD_TEST", requestID="req-create-2", serviceCode="EXP_RECE_CREATE_ORDER",
        timestamp="1699668000000",
        msgData='{"orderId":"SF-T&T+001","language":"zh-CN","monthlyCard":"7551234567","payMethod":1,'
                '"expressTypeId":1,"parcelQty":1,"contactInfoList":[' + SENDER_FULL + ','
                '{"contactType":2,"company":"成都星河+科技 有限公司","contact":"欧阳 娜娜","tel":"028-8888 6666",'
                '"mobile":"139****0366","country":"CN","province":"四川省","city":"成都市","county":"武侯区",'
                '"address":"人民南路4段1号 A&B座 12F~3室","postCode":"610041"}],'
                '"cargoDetails":[{"name":"保温杯 500ml*2 & 杯套","count":2,"unit":"个","weight":0.450,'
                '"amount":79.90},{"name":"赠品 ~ 贴纸+徽章","count":1,"unit":"套","amount":0.00}],'
                '"remark":"周末 勿送 & 轻放+易碎*2 ~谢谢~ 100%"}'),
    "create: minimal": dict(
        partnerID="SF_CASH_01", requestID="req-create-3", serviceCode="EXP_RECE_CREATE_ORDER",
        timestamp="1699783200000",  # 2023-11-12T10:00:00Z
        msgData='{"orderId":"OF20231112000001","language":"zh-CN","payMethod":2,"expressTypeId":2,"parcelQty":1,'
                '"contactInfoList":[' + SENDER_BARE + ','
                '{"contactType":2,"contact":"李雷","mobile":"13800138000","country":"CN","province":"上海市",'
                '"city":"上海市","county":"","address":"浦东新区世纪大道100号"}],'
                '"cargoDetails":[{"name":"英语课本","count":1,"amount":35.00}]}'),
    # cancel-order.test.yaml
    "cancel: tmall-basic": dict(
        partnerID="DOCKYARD_TEST", requestID="req-cancel-1", serviceCode="EXP_RECE_UPDATE_ORDER",
        timestamp="1699668000000",
        msgData='{"orderId":"TM20231111000123","dealType":2}'),
    "cancel: url-hostile": dict(
        partnerID="DOCKYARD_TEST", requestID="req-cancel-2", serviceCode="EXP_RECE_UPDATE_ORDER",
        timestamp="1699668000123",  # 2023-11-11T10:00:00.123+08:00
        msgData='{"orderId":"SF-T&T+001","dealType":2}'),
    # search-order.test.yaml
    "search: tmall-basic": dict(
        partnerID="DOCKYARD_TEST", requestID="req-search-1", serviceCode="EXP_RECE_SEARCH_ORDER_RESP",
        timestamp="1699668000000",
        msgData='{"orderId":"TM20231111000123","searchType":"1","language":"zh-CN"}'),
    "search: url-hostile": dict(
        partnerID="DOCKYARD_TEST", requestID="req-search-2", serviceCode="EXP_RECE_SEARCH_ORDER_RESP",
        timestamp="1699668000000",
        msgData='{"orderId":"SF-T&T+001","searchType":"1","language":"zh-CN"}'),
}


def java_urlencode(text: str) -> str:
    keep = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-*_")
    out = []
    for ch in text:
        if ch in keep:
            out.append(ch)
        elif ch == " ":
            out.append("+")
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def msg_digest(msg_data: str, timestamp: str, check_word: str) -> str:
    encoded = java_urlencode(msg_data + timestamp + check_word)
    return base64.b64encode(hashlib.md5(encoded.encode("utf-8")).digest()).decode("ascii")


def main() -> None:
    for name, form in CASES.items():
        json.loads(form["msgData"])  # the hand-written text must be JSON
        digest = msg_digest(form["msgData"], form["timestamp"], CHECK_WORD)
        body = urllib.parse.urlencode({**form, "msgDigest": digest}, quote_via=urllib.parse.quote_plus)
        print(f"## {name}\nsignature: {digest}\nbody: {body}\n")


if __name__ == "__main__":
    main()
