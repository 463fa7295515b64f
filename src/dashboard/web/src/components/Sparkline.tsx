/** A small inline SVG line of the newest samples (the table has one per sandbox and figure). */
export function Sparkline(props: {
  values: number[];
  max?: number;
  label: string;
  unit: (v: number) => string;
}) {
  const { values, label, unit } = props;
  const w = 96;
  const h = 24;
  const last = values.at(-1);
  const text = last === undefined ? `${label}: no samples yet` : `${label}: ${unit(last)} now`;
  if (values.length < 2)
    return (
      <span class="spark-empty" role="img" aria-label={text}>
        {last === undefined ? '…' : unit(last)}
      </span>
    );
  const top = Math.max(props.max ?? 0, ...values, 1e-9);
  const pts = values
    .map(
      (v, i) => `${((i / (values.length - 1)) * w).toFixed(1)},${(h - (v / top) * (h - 2) - 1).toFixed(1)}`,
    )
    .join(' ');
  return (
    <span class="spark">
      <svg width={w} height={h} viewBox={`0 0 ${w} ${h}`} role="img" aria-label={text}>
        <polyline points={pts} fill="none" stroke="currentColor" stroke-width="1.5" />
      </svg>
      <span class="spark-val">{last === undefined ? '' : unit(last)}</span>
    </span>
  );
}
