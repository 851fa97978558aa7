"""hloc plug-in (loaded as ``hloc.extractors.fusion_xfeat`` after ``fusion.hloc.register()``)."""

from hloc.utils.base_model import BaseModel

from fusion.features.extractor import FusionExtractor


class FusionXFeat(BaseModel):
    default_conf = FusionExtractor.default_conf
    required_inputs = ["image"]

    def _init(self, conf):
        self.net = FusionExtractor(conf)

    def _forward(self, data):
        return self.net(data)
