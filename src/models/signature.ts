import type { InferenceSession } from 'onnxruntime-node';
import { z } from 'zod';

/**
 * What a model takes and gives, as stored in ml._models.signature and read by ml.deploy.
 * Unknown dimensions are null. Non-tensor values (skl2onnx's ZipMap) are kept, marked, so
 * ml.deploy can say why they cannot be mapped.
 */
const valueInfo = z.discriminatedUnion('tensor', [
  z.object({
    name: z.string(),
    tensor: z.literal(true),
    type: z.string(),
    shape: z.array(z.number().int().nullable()),
  }),
  z.object({ name: z.string(), tensor: z.literal(false) }),
]);

export const signatureSchema = z.object({ inputs: z.array(valueInfo), outputs: z.array(valueInfo) });
export type Signature = z.infer<typeof signatureSchema>;
export type ValueInfo = z.infer<typeof valueInfo>;

function describeValue(meta: InferenceSession.ValueMetadata): ValueInfo {
  if (!meta.isTensor) return { name: meta.name, tensor: false };
  return {
    name: meta.name,
    tensor: true,
    type: meta.type,
    shape: meta.shape.map((dim) => (typeof dim === 'number' && dim >= 0 ? dim : null)),
  };
}

export function signatureOf(session: InferenceSession): Signature {
  return {
    inputs: session.inputMetadata.map(describeValue),
    outputs: session.outputMetadata.map(describeValue),
  };
}
