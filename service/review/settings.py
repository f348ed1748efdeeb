"""Review-workstation settings (env prefix ``PAROTID_REVIEW_``), read once by ``create_app``."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ReviewSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAROTID_REVIEW_", frozen=True, extra="ignore")

    mark_approved: bool = Field(
        default=False,
        description="on approval, also write an RTSTRUCT copy with (300E,0002) ApprovalStatus APPROVED, "
        "ReviewerName, ReviewDate and ReviewTime (and deliver that copy); off: every RTSTRUCT stays UNAPPROVED",
    )
    max_mask_bytes: int = Field(default=512 * 2**20, gt=0, description="largest corrected-mask upload")
