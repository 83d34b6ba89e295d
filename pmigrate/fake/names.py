"""Names, comments and content types for fake deployments, in several scripts.

Arabic, Korean, Hindi, emoji, quotes and spaces are there on purpose: every
copier and backend must carry them unchanged.
"""

from __future__ import annotations

# (display name, ascii login stem)
PEOPLE = (
    ("Alice Martin", "alice"),
    ("Bob Durand", "bob"),
    ("Zoë Müller", "zoe"),
    ("François L'Hôte", "francois"),
    ("أحمد خالد", "ahmed"),
    ("فاطمة الزهراء", "fatima"),
    ("김민준", "minjun"),
    ("이서연", "seoyeon"),
    ("प्रिया शर्मा", "priya"),
    ("राहुल वर्मा", "rahul"),
    ("Ольга Иванова", "olga"),
    ("田中 太郎", "taro"),
    ("Chloé 🎸", "chloe"),
    ("O'Brien, Seán", "sean"),
)

MAIL_DOMAINS = ("example.com", "mail.example", "corp.example.org", "università.example")

TOKEN_COMMENTS = ("", "", "cli", "laptop", "CI upload token", "backup script", "سكربت النسخ", "배포용 토큰", "🤖 bot")

COMMENTS = (
    "here are the files",
    "logs for ticket #4521",
    "愛 الحب 사랑 αγάπη любовь प्यार Սեր माया",
    "Voilà les photos 📸",
    "ملفات الاجتماع",
    "회의 자료입니다",
    "बैठक की फ़ाइलें",
    'quotes \' and " and `backticks`',
    "line one\nline two",
    "🎉🎉🎉",
)

WORDS = (
    "the", "build", "artifacts", "for", "release", "candidate", "and", "logs", "from", "staging",
    "please", "review", "before", "Friday", "تقرير", "المشروع", "보고서", "프로젝트", "रिपोर्ट", "परियोजना",
    "données", "résumé", "🚀", "✅", "naïve", "Ærøskøbing", "straße",
)

# (stem, extension, content type)
STEMS = (
    "report", "photo", "IMG_2041", "backup", "notes", "invoice 2026-03", "slides final (2)", "data",
    "تقرير", "صورة العائلة", "사진", "보고서 최종", "दस्तावेज़", "तस्वीर", "🎉party", "résumé", "отчёт",
    "写真", "it's \"quoted\"", "semi;colon & amp", ".hidden", "very " + "long " * 20 + "name",
)
TYPES = (
    ("pdf", "application/pdf"),
    ("jpg", "image/jpeg"),
    ("png", "image/png"),
    ("txt", "text/plain; charset=utf-8"),
    ("log", "text/plain; charset=utf-8"),
    ("csv", "text/csv"),
    ("json", "application/json"),
    ("zip", "application/zip"),
    ("tar.gz", "application/gzip"),
    ("mp4", "video/mp4"),
    ("bin", "application/octet-stream"),
    ("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
)


def all_file_names() -> list[tuple[str, str]]:
    """Every (file name, content type plikd would record) fakedb draws from."""
    out = [(f"{stem}.{ext}", ctype) for stem in STEMS for ext, ctype in TYPES]
    out += [(stem, "application/octet-stream") for stem in STEMS]  # no extension
    return out
