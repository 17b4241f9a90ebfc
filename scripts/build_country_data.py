"""Build mechlin/datasets/data/countries.json from the `countryinfo` package (MIT licence).

Run once at development time (the package itself never needs countryinfo):
    pip install countryinfo==1.0.1 && python scripts/build_country_data.py
Keeps sovereign-looking entries with a capital and a region; languages are ISO 639-1 codes,
mapped to English names with the table below (codes without a name are dropped).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from countryinfo import all_countries

LANGUAGES = {
    "ar": "Arabic",
    "bn": "Bengali",
    "cs": "Czech",
    "da": "Danish",
    "de": "German",
    "el": "Greek",
    "en": "English",
    "es": "Spanish",
    "et": "Estonian",
    "fa": "Persian",
    "fi": "Finnish",
    "fr": "French",
    "he": "Hebrew",
    "hi": "Hindi",
    "hr": "Croatian",
    "hu": "Hungarian",
    "hy": "Armenian",
    "id": "Indonesian",
    "is": "Icelandic",
    "it": "Italian",
    "ja": "Japanese",
    "ka": "Georgian",
    "ko": "Korean",
    "lt": "Lithuanian",
    "lv": "Latvian",
    "mn": "Mongolian",
    "ms": "Malay",
    "nl": "Dutch",
    "no": "Norwegian",
    "pl": "Polish",
    "pt": "Portuguese",
    "ro": "Romanian",
    "ru": "Russian",
    "sk": "Slovak",
    "sl": "Slovenian",
    "sq": "Albanian",
    "sr": "Serbian",
    "sv": "Swedish",
    "sw": "Swahili",
    "th": "Thai",
    "tr": "Turkish",
    "uk": "Ukrainian",
    "ur": "Urdu",
    "vi": "Vietnamese",
    "zh": "Chinese",
    "bg": "Bulgarian",
    "be": "Belarusian",
    "mk": "Macedonian",
    "ga": "Irish",
    "mt": "Maltese",
    "ne": "Nepali",
    "km": "Khmer",
    "lo": "Lao",
    "my": "Burmese",
    "am": "Amharic",
    "so": "Somali",
    "uz": "Uzbek",
    "kk": "Kazakh",
    "az": "Azerbaijani",
    "tk": "Turkmen",
    "ky": "Kyrgyz",
    "tg": "Tajik",
    "ps": "Pashto",
    "si": "Sinhala",
    "ta": "Tamil",
    "tl": "Tagalog",
    "af": "Afrikaans",
}


def main() -> None:
    everything = {c.info()["name"]: c.info() for c in all_countries()}
    by_alpha3 = {c.get("ISO", {}).get("alpha3"): c.get("name") for c in everything.values()}
    out = []
    for info in everything.values():
        if not info.get("capital") or not info.get("region") or not info.get("name"):
            continue
        provinces = info.get("provinces") or []
        if isinstance(provinces, str):
            provinces = ast.literal_eval(provinces)
        out.append(
            {
                "name": info["name"],
                "capital": info["capital"][0]
                if isinstance(info["capital"], list)
                else info["capital"],
                "region": info["region"],
                "subregion": info.get("subregion", ""),
                "demonym": info.get("demonym", ""),
                "languages": [LANGUAGES[c] for c in info.get("languages", []) if c in LANGUAGES],
                "currencies": info.get("currencies", []),
                "provinces": list(provinces),
                "neighbours": [by_alpha3[b] for b in info.get("borders", []) if by_alpha3.get(b)],
            }
        )
    out.sort(key=lambda c: c["name"])
    path = Path(__file__).resolve().parents[1] / "mechlin" / "datasets" / "data" / "countries.json"
    path.write_text(json.dumps(out, ensure_ascii=False, indent=0))
    print(f"wrote {len(out)} countries to {path}")


if __name__ == "__main__":
    main()
