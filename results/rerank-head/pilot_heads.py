"""The pilot behind `head: cosine` (results/rerank-head.md, section 1), kept as it ran: written before the head was in
the library, so it builds the pairs and the training loop itself. IAA-L 0.5 % cross-encoder on all-MiniLM-L6-v2 whose
score is either scale * cos(mean query-segment states, mean passage-segment states) of the joint encoding (`cos`,
scale a trainable scalar starting at 20) or a new linear head on [CLS] (`cls`); LCE on SciFact train (1 positive + 7
BM25 negatives of the top 32 non-relevant), re-ranking the BM25 top 20 of the first N test queries at a few steps.

    python pilot_heads.py N STEPS cos|cls LR EVALSTEPS       # e.g. 100 150 cos 1e-3 0,50,100,150

It reads /work/exp/test.bm25.trec and the BM25 run of the training queries of a `peft-ir run` folder (paths below):
BM25 top 100 by `peft-ir bm25 search` as in results/distill-pilot.md section 2."""
import sys, random, time, torch
sys.path.insert(0, "/work/main/src")
from peft_ir.models import resolve_model
from peft_ir.data import read_run, BeirDataset, load_corpus
from peft_ir.tuning import budget_config, apply_tuning, trainable_parameters
from transformers import AutoTokenizer, AutoModel, get_linear_schedule_with_warmup
import ir_measures
from ir_measures import nDCG
torch.set_num_threads(2); torch.manual_seed(0); random.seed(0)
N, STEPS, HEAD, LR = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
EVAL = [int(x) for x in sys.argv[5].split(",")]
path = resolve_model(None)
tok = AutoTokenizer.from_pretrained(path); model = AutoModel.from_pretrained(path)
cfg = budget_config(model, "iaa-l", 0.005)
apply_tuning(model, cfg)
scale = torch.nn.Parameter(torch.tensor(20.0))
head = torch.nn.Linear(model.config.hidden_size, 1) if HEAD == "cls" else None
print("trainable", trainable_parameters(model), flush=True)
corpus = load_corpus(BeirDataset("/work/main/data/scifact", "test").corpus_path)
te, tr = BeirDataset("/work/main/data/scifact", "test"), BeirDataset("/work/main/data/scifact", "train")
tq, trq, trqrels = te.queries(), tr.queries(), tr.qrels()
bm25 = read_run("/work/exp/test.bm25.trec"); trbm25 = read_run("/work/exp/runs/iaa-l-0.5-kl/runs/train.bm25.trec")
qids = sorted(bm25)[:N]
train_q = sorted(q for q in trqrels if q in trbm25)
def enc(qs, ps):
    qe = [tok.encode(q, add_special_tokens=False)[:32] for q in qs]
    pe = [tok.encode(p, add_special_tokens=False)[:128] for p in ps]
    ids = [[tok.cls_token_id] + a + [tok.sep_token_id] + b + [tok.sep_token_id] for a, b in zip(qe, pe)]
    W = max(map(len, ids))
    I = torch.zeros(len(ids), W, dtype=torch.long); A = torch.zeros_like(I); T = torch.zeros_like(I)
    QM = torch.zeros(len(ids), W, dtype=torch.bool); PM = torch.zeros_like(QM)
    for i, (x, a) in enumerate(zip(ids, qe)):
        I[i, :len(x)] = torch.tensor(x); A[i, :len(x)] = 1; T[i, len(a) + 2:len(x)] = 1
        QM[i, 1:len(a) + 1] = True; PM[i, len(a) + 2:len(x) - 1] = True
    return I, A, T, QM, PM
def score(qs, ps):
    I, A, T, QM, PM = enc(qs, ps)
    h = model(input_ids=I, attention_mask=A, token_type_ids=T).last_hidden_state
    if head is not None:
        return head(h[:, 0])[:, 0]
    qv = (h * QM[..., None]).sum(1) / QM.sum(1, keepdim=True)
    pv = (h * PM[..., None]).sum(1) / PM.sum(1, keepdim=True)
    return scale * torch.nn.functional.cosine_similarity(qv, pv)
def evaluate(step):
    model.eval(); run = {}
    with torch.inference_mode():
        for qid in qids:
            docs = sorted(bm25[qid], key=lambda d: -bm25[qid][d])[:20]
            s = score([tq[qid]] * 20, [corpus[d].joined() for d in docs])
            run[qid] = {d: float(x) for d, x in zip(docs, s)}
    model.train()
    q = {k: v for k, v in te.qrels().items() if k in qids}
    print(f"step {step} test{N} nDCG@10 {ir_measures.calc_aggregate([nDCG@10], q, run)[nDCG@10]:.4f} bm25 "
          f"{ir_measures.calc_aggregate([nDCG@10], q, {k: bm25[k] for k in qids})[nDCG@10]:.4f} ({time.strftime('%H:%M:%S')})", flush=True)
params = [p for p in model.parameters() if p.requires_grad] + [scale] + (list(head.parameters()) if head else [])
opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
sched = get_linear_schedule_with_warmup(opt, int(0.1 * STEPS), STEPS)
model.train()
if 0 in EVAL: evaluate(0)
for step in range(1, STEPS + 1):
    qs, ps = [], []
    for qid in random.sample(train_q, 4):
        pos = [d for d, r in trqrels[qid].items() if r > 0]
        negs = [d for d in sorted(trbm25[qid], key=lambda d: -trbm25[qid][d]) if d not in trqrels[qid]][:32]
        group = [random.choice(pos)] + random.sample(negs, 7)
        qs += [trq[qid]] * 8; ps += [corpus[d].joined() for d in group]
    logits = score(qs, ps).view(4, 8)
    loss = torch.nn.functional.cross_entropy(logits, torch.zeros(4, dtype=torch.long))
    loss.backward(); opt.step(); sched.step(); opt.zero_grad()
    if step % 20 == 0: print(f"step {step} loss {loss.item():.3f} scale {scale.item():.2f}", flush=True)
    if step in EVAL: evaluate(step)
