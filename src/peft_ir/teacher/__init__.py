"""Teachers (a cross-encoder, a bi-encoder, or a fusion of runs) and what they supervise: scored training files
(`peft-ir annotate`) and the teacher-margin filter of hard-negative mining (`peft-ir mine --teacher`)."""

from peft_ir.teacher.config import DEFAULT_MARGIN, AnnotateConfig, TeacherConfig, TeacherMiningConfig

__all__ = ["DEFAULT_MARGIN", "AnnotateConfig", "TeacherConfig", "TeacherMiningConfig"]
