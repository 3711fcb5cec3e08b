"""Small harmonised evidence tables for the model, fit and summary tests.

Shaped like the bundled evidence (several domains on different metrics, weak
designs, two direction-only findings, a project with two estimates in one
domain, an excluded row) until the lead's loader provides the real one. The
numbers are made up for testing; they are not evidence.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

DOMAINS = {
    # id: (label, metric, beneficial, mid, scale)
    "employment": ("Employment", "pp", "increase", 2.0, 10.0),
    "self_support": ("Self-support", "pp", "increase", 2.0, 10.0),
    "school_absence": ("School absence", "pp", "decrease", 1.0, 5.0),
    "exam_grade": ("Leaving-exam grade", "grade", "increase", 0.3, 1.0),
    "disability_pension": ("Disability pension", "pp", "decrease", 1.0, 5.0),
    "child_welfare": ("Child-welfare cases", "pp", "decrease", 2.0, 10.0),
    "wellbeing": ("Wellbeing", "score", "increase", 5.0, 10.0),
}

ROWS = [
    # estimate_id, project, domain, design, yi, sei, extra
    ("oto:employment_itt", "oto", "employment", "rct", 1.5, 3.0, {}),
    ("vive:employment", "vive_social_support", "employment", "matched_register", None, None,
     {"direction_only": True, "direction": "increase", "significant": True}),
    ("drc:employment", "drc_sib", "employment", "comparison_group", 18.0, 8.0, {}),
    ("cfbu:employment", "cph_cfbu_outreach", "employment", "area_comparison", 3.0, 2.5, {}),
    ("assens:self_support", "assens_job_familie", "self_support", "before_after", 12.0, 6.0, {}),
    ("mploy:self_support", "cph_mploy_local", "self_support", "area_comparison", 5.0, 3.0, {}),
    ("oto:school_absence_children", "oto", "school_absence", "rct", -1.2, 0.8, {}),
    ("oto:school_absence_youth", "oto", "school_absence", "rct", -0.5, 0.9, {}),
    ("oto:exam_grade", "oto", "exam_grade", "rct", 0.2, 0.25, {}),
    ("vive:disability_pension", "vive_social_support", "disability_pension", "matched_register", None, None,
     {"direction_only": True, "direction": "decrease", "significant": True}),
    ("assens:child_cases", "assens_job_familie", "child_welfare", "before_after", -8.0, 5.0, {}),
    ("oto:child_notifications", "oto", "child_welfare", "rct", -2.0, 3.0, {}),
    ("oto:wellbeing", "oto", "wellbeing", "rct", 3.0, 4.0, {}),
    ("drc:who5", "drc_sib", "wellbeing", "comparison_group", None, None,
     {"poolable": False, "exclusion_reason": "described without numbers in the source"}),
]


def bundled_like() -> pd.DataFrame:
    """A table with the columns of ``metaeval.load_evidence`` (made-up numbers)."""
    records = []
    for eid, project, domain, design, yi, sei, extra in ROWS:
        label, metric, beneficial, mid, scale = DOMAINS[domain]
        records.append({
            "estimate_id": eid, "project_id": project, "project_name": project.replace("_", " "),
            "domain": domain, "design": design, "estimand": "itt", "outcome": eid.split(":")[1],
            "yi": math.nan if yi is None else yi, "sei": math.nan if sei is None else sei,
            "poolable": extra.get("poolable", True),
            "direction_only": extra.get("direction_only", False),
            "direction": extra.get("direction"), "significant": extra.get("significant"),
            "sig_level": 0.05, "exclusion_reason": extra.get("exclusion_reason"),
            "domain_label": label, "domain_metric": metric, "domain_beneficial": beneficial,
            "domain_mid": mid, "domain_scale": scale,
        })
    return pd.DataFrame.from_records(records)


EIGHT_SCHOOLS_Y = [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]
EIGHT_SCHOOLS_SE = [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]


def csv_like(yi, sei, studies=None, domain="all") -> pd.DataFrame:
    """A table as the loader makes it from a metafor-style CSV (no design, scale 1)."""
    studies = studies or [chr(ord("A") + i) for i in range(len(yi))]
    n = len(yi)
    return pd.DataFrame({
        "estimate_id": studies, "project_id": studies, "project_name": studies,
        "domain": [domain] * n, "design": ["unspecified"] * n, "estimand": [None] * n, "outcome": [None] * n,
        "yi": np.asarray(yi, float), "sei": np.asarray(sei, float), "poolable": [True] * n,
        "direction_only": [False] * n, "direction": [None] * n, "significant": [None] * n,
        "sig_level": [0.05] * n, "exclusion_reason": [None] * n,
        "domain_label": [domain] * n, "domain_metric": [None] * n, "domain_beneficial": ["increase"] * n,
        "domain_mid": [math.nan] * n, "domain_scale": [1.0] * n,
    })
