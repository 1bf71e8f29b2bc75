from .metrics import classification_metrics, confusion_matrix, metrics_from_confusion, uar

__all__ = ["classification_metrics", "confusion_matrix", "metrics_from_confusion", "uar"]
